/**
 * The live admin (WSSERVER_ADMIN): added to admin pages by the publisher's
 * admin/base_site.html, configured by the {% wsserver_admin %} tag.
 *
 * - On an object's change form, a change or deletion of that object by
 *   someone else shows a warning ("Changed by bob a few seconds ago: ...")
 *   and saving the stale form asks for confirmation first.
 * - On a model's change list, "3 changes since this page was loaded", with a
 *   link to reload.
 * - On every page, app events (publish()) addressed to the user appear as
 *   notices. A site renders its own by listening to the cancelable
 *   "wsserver:notification" event on document (event.detail is the app
 *   event) and calling preventDefault().
 *
 * The sidecar decides what arrives, as always: a user who may not see a
 * model receives none of its events. When the sidecar is down, nothing
 * shows: wsserver.js reconnects quietly, with backoff.
 */

import { connect } from "./wsserver.js";

const gettext = window.gettext || ((text) => text);
const ngettext =
  window.ngettext || ((singular, plural, count) => (count === 1 ? singular : plural));
const interpolate =
  window.interpolate ||
  ((format, values, named) =>
    named
      ? format.replace(/%\((\w+)\)s/g, (_, key) => String(values[key]))
      : format.replace(/%s/g, () => String(values.shift())));

const MAX_NOTICES = 5;

function start() {
  const element = document.getElementById("wsserver-admin-config");
  if (!element) return;
  const config = JSON.parse(element.textContent);
  const live = new LiveAdmin(config);
  window.wsserverAdmin = live;
  live.connection = connect({
    url: config.url,
    tokenUrl: config.tokenUrl,
    onEvent: (event) => live.receive(event),
    onStatus: (status) => {
      live.status = status;
    },
  });
}

class LiveAdmin {
  constructor(config) {
    this.config = config;
    this.region = null;
    this.stale = null; // the latest change of the object by someone else
    this.changes = 0; // on a change list
    this.timer = null;
    this.status = "connecting";
    if (config.page === "change_form") this.guardForm();
  }

  receive(event) {
    if (typeof event.event === "string" && !("action" in event)) {
      this.notify(event);
    } else if (typeof event.action === "string") {
      this.adminEvent(event);
    }
  }

  adminEvent(event) {
    const config = this.config;
    if (event.content_type_id !== config.contentTypeId) return;
    if (config.page === "change_list") {
      this.changes += 1;
      this.showChanges();
    } else if (
      config.page === "change_form" &&
      String(event.object_id) === config.objectId &&
      event.user !== config.user
    ) {
      this.stale = event;
      this.showStale();
    }
  }

  // The live region: a message list at the top of the content, styled by
  // the admin's own CSS (light and dark themes), announced politely.
  list() {
    if (this.region === null) {
      this.region = document.createElement("ul");
      this.region.className = "messagelist wsserver-admin";
      this.region.setAttribute("role", "status");
      this.region.setAttribute("aria-live", "polite");
      const main = document.getElementById("content-start") || document.body;
      const content = document.getElementById("content");
      main.insertBefore(this.region, content && content.parentNode === main ? content : main.firstChild);
    }
    return this.region;
  }

  item(id, level) {
    let item = document.getElementById(id);
    if (item === null) {
      item = document.createElement("li");
      item.id = id;
      this.list().appendChild(item);
    }
    item.className = level;
    item.replaceChildren();
    return item;
  }

  showStale() {
    const event = this.stale;
    const item = this.item("wsserver-stale", "warning");
    const deleted = event.action === "deletion";
    const values = { user: event.user || gettext("someone"), when: ago(event.timestamp) };
    const text = deleted
      ? interpolate(gettext("Deleted by %(user)s %(when)s."), values, true)
      : interpolate(gettext("Changed by %(user)s %(when)s"), values, true) +
        (event.message ? `: ${event.message}` : ".");
    item.append(text, " ");
    const reload = document.createElement("a");
    reload.href = "";
    reload.textContent = deleted
      ? gettext("Reload to see that it is gone.")
      : gettext("Reload to see the current version.");
    item.append(reload);
    // "a few seconds ago" becomes "2 minutes ago".
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.showStale(), 30000);
  }

  guardForm() {
    const form = document.getElementById(`${this.config.modelName}_form`);
    if (!form) return;
    form.addEventListener(
      "submit",
      (submit) => {
        if (this.stale === null) return;
        const values = { user: this.stale.user || gettext("someone") };
        const question =
          this.stale.action === "deletion"
            ? gettext("%(user)s deleted this object after you opened it. Save it anyway?")
            : gettext(
                "%(user)s changed this object after you opened it. Save anyway, replacing their changes?",
              );
        if (!window.confirm(interpolate(question, values, true))) {
          submit.preventDefault();
          submit.stopImmediatePropagation();
        }
      },
      true,
    );
  }

  showChanges() {
    const item = this.item("wsserver-changes", "info");
    const text = ngettext(
      "%(count)s change since this page was loaded.",
      "%(count)s changes since this page was loaded.",
      this.changes,
    );
    item.append(interpolate(text, { count: this.changes }, true), " ");
    const reload = document.createElement("a");
    reload.href = "";
    reload.textContent = gettext("Reload");
    item.append(reload);
  }

  notify(event) {
    const notification = new CustomEvent("wsserver:notification", {
      detail: event,
      cancelable: true,
    });
    if (!document.dispatchEvent(notification)) return;
    const list = this.list();
    const item = document.createElement("li");
    item.className = "info wsserver-notice";
    item.dataset.event = event.event;
    const data = event.data;
    const text =
      typeof data === "string"
        ? data
        : data && typeof data.message === "string"
          ? data.message
          : event.event;
    const dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "wsserver-dismiss";
    dismiss.setAttribute("aria-label", gettext("Dismiss"));
    dismiss.textContent = "×";
    dismiss.addEventListener("click", () => item.remove());
    item.append(text, " ", dismiss);
    list.appendChild(item);
    const notices = list.querySelectorAll(".wsserver-notice");
    for (let index = 0; index < notices.length - MAX_NOTICES; index++) notices[index].remove();
  }
}

function ago(timestamp) {
  const seconds = (Date.now() - Date.parse(timestamp)) / 1000;
  if (!(seconds < 60)) {
    const minutes = Math.floor((Number.isFinite(seconds) ? seconds : 0) / 60);
    if (minutes >= 1) {
      return interpolate(ngettext("%s minute ago", "%s minutes ago", minutes), [minutes]);
    }
  }
  return gettext("a few seconds ago");
}

start();
