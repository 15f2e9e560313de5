/**
 * wsserver.js: connect a page to the wsserver sidecar. No dependencies.
 *
 *   import { connect } from "/static/wsserver/wsserver.js";
 *
 *   const notifications = connect({
 *     url: "wss://ws.example.com/",     // the sidecar
 *     tokenUrl: "/wsserver/token/",      // the publisher app's token view
 *     onEvent(event) { ... },            // each event the user may see
 *     onGap(message) { ... },            // events were missed: reload state
 *     onStatus(status, detail) { ... },  // connecting, connected,
 *                                        // disconnected, logged-out
 *   });
 *   notifications.close();
 *
 * One callback, onEvent, receives every event, of either shape:
 *
 *   - app events, sent by the site's publish("export.ready", data, ...):
 *     {"id": "1795571796178-1", "event": "export.ready", "data": {...}},
 *     told apart by their "event" field (the name given to publish());
 *   - admin and model-change events (the admin's LogEntry, WSSERVER_MODELS):
 *     {"id": ..., "action": "addition", "model": ..., "object": ...,
 *      "object_id": ..., "content_type_id": ..., "user": ..., ...},
 *     told apart by their "action" field.
 *
 *   onEvent(event) {
 *     if (event.event === "export.ready") showDownload(event.data.url);
 *     else if (event.action) refreshList(event.model);
 *   }
 *
 * Protocol messages have a "type" field and never reach onEvent: a
 * "resume_gap" goes to onGap, a "cursor" (on a Redis Cluster) updates the
 * position, any other type is ignored. Every event's "id"
 * (there is none when the site keeps no history) is the position it resumes
 * from, whatever its shape. On a Redis Cluster an id names its partition
 * ("17:1795571796178-1") and the position is a cursor: the last id of each
 * partition, comma-separated (see nextPosition); lastEventId is it.
 *
 * Before every connection it fetches a fresh token (tokens are short-lived,
 * and die with a revocation), so it never retries with a refused token. When
 * the token view says the user is logged out (401), it stops. After any other
 * close it reconnects with full-jitter exponential backoff, capped, and
 * resumes from the last event id it saw, so nothing in the server's history
 * is missed.
 */

/**
 * The position to resume from once the event with this id was received: the
 * id itself, or on a Redis Cluster the cursor with this partition's id
 * replaced.
 */
export function nextPosition(position, id) {
  const colon = id.indexOf(":");
  if (colon < 0) return id;
  const partition = id.slice(0, colon + 1);
  const ids = position === null ? [] : position.split(",");
  const others = ids.filter((item) => item.includes(":") && !item.startsWith(partition));
  return [...others, id].join(",");
}

export function connect({
  url,
  tokenUrl = "/wsserver/token/",
  onEvent = () => {},
  onGap = () => {},
  onStatus = () => {},
  lastEventId = null,
  minDelay = 1000,
  maxDelay = 30000,
  stableAfter = 10000,
} = {}) {
  let websocket = null;
  let timer = null;
  let attempt = 0;
  let openedAt = 0;
  let stopped = false;

  async function fetchToken() {
    const response = await fetch(tokenUrl, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
    });
    if (response.status === 401 || response.status === 403) return null;
    if (!response.ok) throw new Error(`token view answered ${response.status}`);
    return (await response.json()).token;
  }

  async function open() {
    timer = null;
    if (stopped) return;
    onStatus("connecting");
    let token;
    try {
      token = await fetchToken();
    } catch (error) {
      onStatus("disconnected", { error: String(error) });
      schedule();
      return;
    }
    if (stopped) return;
    if (token === null) {
      stopped = true;
      onStatus("logged-out");
      return;
    }
    try {
      websocket = new WebSocket(url);
    } catch (error) {
      // A malformed URL, or ws:// from an https:// page: say so, keep trying.
      onStatus("disconnected", { error: String(error) });
      schedule();
      return;
    }
    websocket.onopen = () => {
      openedAt = Date.now();
      websocket.send(
        lastEventId === null
          ? token
          : JSON.stringify({ token, last_event_id: lastEventId }),
      );
      onStatus("connected");
    };
    websocket.onmessage = ({ data }) => {
      let message;
      try {
        message = JSON.parse(data);
      } catch {
        return;
      }
      if (message === null || typeof message !== "object" || Array.isArray(message)) {
        return;
      }
      if (typeof message.type === "string") {
        // A protocol message, never an event.
        if (message.type === "resume_gap") onGap(message);
        // A Redis Cluster's positions in the partitions this user follows.
        if (message.type === "cursor" && typeof message.cursor === "string") {
          for (const id of message.cursor.split(",")) {
            if (id) lastEventId = nextPosition(lastEventId, id);
          }
        }
        return;
      }
      // An app event ("event", "data") or an admin/model-change event
      // ("action", ...): both resume from their id.
      if (typeof message.id === "string") {
        lastEventId = nextPosition(lastEventId, message.id);
      }
      onEvent(message);
    };
    websocket.onclose = ({ code, reason }) => {
      websocket = null;
      if (stopped) return;
      if (openedAt && Date.now() - openedAt > stableAfter) attempt = 0;
      openedAt = 0;
      onStatus("disconnected", { code, reason });
      schedule();
    };
  }

  function schedule() {
    // Full jitter: spread reconnections after a restart over the whole window.
    const ceiling = Math.min(maxDelay, minDelay * 2 ** attempt);
    attempt += 1;
    timer = setTimeout(open, Math.random() * ceiling);
  }

  open();

  return {
    close() {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      if (websocket !== null) websocket.close(1000);
    },
    get lastEventId() {
      return lastEventId;
    },
  };
}
