"""Subcommands of `scion-scheduler`, one module per group. Each module has
`register(subparsers)`, adding its commands with a `handler(args, settings) -> int` default."""
