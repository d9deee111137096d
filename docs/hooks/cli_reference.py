"""mkdocs hook: the CLI reference page (`cli.md`), generated from the typer app on every build.

It walks `typer.main.get_command(edgekit.cli.app)` (click groups and commands) and writes, for each command, its
usage line, its help and a table of its arguments and options with their defaults. The page is not committed: it
cannot drift from the code because it is the code's own description. Run `make docs` to see it (site/cli/).
"""

from __future__ import annotations

import typer
from mkdocs.structure.files import File

from edgekit.cli import app

PAGE = "cli.md"
INTRO = """# CLI reference

Every `edgekit` command, its arguments and options with their defaults. This page is generated from the command
line itself (`typer.main.get_command(edgekit.cli.app)`) each time the site is built, so it says what the installed
`edgekit` does; `edgekit COMMAND --help` prints the same. For what the commands do together, see
[Commands](commands.md).
"""

# Duck-typed: typer builds its commands on click's model (its own copy of click in recent versions), so the walk uses
# the attributes both share: list_commands/get_command for groups, opts/secondary_opts/default/required/help for
# parameters, get_usage for the usage line.


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(param) -> str:
    if param.required:
        return "required"
    if getattr(param, "is_flag", False) and param.secondary_opts:
        return f"`{param.opts[0] if param.default else param.secondary_opts[0]}`"
    default = param.default
    if default is None or default is False or callable(default) or (isinstance(default, (list, tuple)) and not default):
        return ""
    if isinstance(default, (list, tuple)):
        default = ", ".join(map(str, default))
    return f"`{default}`"


def _names(param) -> str:
    if param.param_type_name == "argument":
        return f"`{param.name.upper()}`"
    return " / ".join(f"`{n}`" for n in [*param.opts, *param.secondary_opts])


def _kind(param, ctx) -> str:
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return "flag"
    display = getattr(param, "display_type", None)
    if callable(display):  # typer's own parameters: `<int>`, `<list[str]>`
        kind = display(ctx).strip("<>")
    else:  # click's: a ParamType, a Choice lists its choices
        kind = "|".join(param.type.choices) if hasattr(param.type, "choices") else param.type.name
    return kind + (" (repeatable)" if getattr(param, "multiple", False) and "list" not in kind else "")


def _command(cmd, ctx, out: list[str]) -> None:
    if getattr(cmd, "hidden", False):
        return
    if ctx.parent is not None:
        out.append(f"\n{'#' * min(len(ctx.command_path.split()), 4)} `{ctx.command_path}`\n")
    usage = cmd.get_usage(ctx).strip().removeprefix("Usage: ")
    out.append(f"```\n{usage}\n```\n")
    if cmd.help:
        out.append(cmd.help.strip() + "\n")
    params = [p for p in cmd.get_params(ctx) if not getattr(p, "hidden", False) and p.name != "help"]
    if params:
        out.append("| argument / option | type | default | help |\n|---|---|---|---|")
        for p in params:
            help_text = getattr(p, "help", None) or ""  # click's arguments have none
            out.append(f"| {_names(p)} | {_cell(_kind(p, ctx))} | {_cell(_default(p))} | {_cell(help_text)} |")
        out.append("")
    if hasattr(cmd, "list_commands"):  # a group
        subs = [(name, cmd.get_command(ctx, name)) for name in cmd.list_commands(ctx)]
        subs = [(name, sub) for name, sub in subs if not getattr(sub, "hidden", False)]
        out.append("Commands: " + ", ".join(f"`{name}`" for name, _ in subs) + ".\n")
        for name, sub in subs:
            _command(sub, sub.context_class(sub, info_name=name, parent=ctx), out)


def render() -> str:
    root = typer.main.get_command(app)
    lines = [INTRO, "## `edgekit`\n"]
    _command(root, root.context_class(root, info_name="edgekit"), lines)
    return "\n".join(lines) + "\n"


def on_files(files, config):
    """Add the generated page to the site's files (mkdocs then builds it like any page in docs/)."""
    files.append(File.generated(config, PAGE, content=render()))
    return files
