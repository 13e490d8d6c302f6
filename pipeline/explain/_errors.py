"""The one error every explainer raises for a model it cannot explain."""


class UnsupportedModelError(ValueError):
    """A model (architecture, block, option or wrapper) an explainer cannot explain; the message says why."""
