"""One module (or package) per model component; each owns its config dataclass and key map."""
