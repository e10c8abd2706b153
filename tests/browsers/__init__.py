"""Browser engines for the browser suite: one module per engine behind `engine.Engine`."""
