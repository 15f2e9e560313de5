from authproject.readonly.refusal import RefusingCommand as Command

__all__ = ["Command"]
