"""The HTTPS admin face: Klein apps as classes with injected dependencies."""
