"""Model-agnostic building blocks reused by every fastltx component."""
