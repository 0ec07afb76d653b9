"""The composition root: the command-line tool and the HTTP API put `scheduler` (what fires
when) and `worker` (what a fire does) together. It is the only package that imports both."""
