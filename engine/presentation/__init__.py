"""How the `nudge` command shows things to people: the one home of presentation.

cli.py parses arguments, calls the engine and prints through these modules, so every
command looks and behaves alike:

- output.py: plain lines, `--json`, warnings, plurals, `Error:` exits;
- times.py: instants in the shop's zone to the second, and the one `--at` parser;
- tables.py: tables (rich in a terminal, plain aligned text in pipes and tests);
- progress.py: progress bars on stderr (silent off a terminal or with --quiet);
- errors.py: expected failures (database unreachable, disk full) as one line, and
  database URLs without their password;
- evaluation.py: a rule evaluation (dry-run, fire) as text;
- stores.py: the stores a command opened, closed when it ends.
"""
