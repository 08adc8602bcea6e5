"""One module per `photoscore` subcommand. Each exposes `register(subparsers)`, which adds its
parser and sets `handler(args, config) -> int`; the CLI discovers the modules, so a new command is
one new file."""
