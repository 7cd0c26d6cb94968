"""Carbon-intensity sources: one adapter per upstream, each the only module that knows its wire format."""
