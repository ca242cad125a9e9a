"""``nexus-writer-ioc`` command line: serve, sim, demo, check-layout, bench."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__


def _check_layout(args: argparse.Namespace) -> int:
    from ._resources import layout_file
    from .layout.model import LayoutError, default_layout, load_layout, schema_errors
    from .layout.ndattributes import AttributesError, load_attributes
    from .tools.check_layout import check

    spec = layout_file("default.xml") if args.layout in ("", "default") else args.layout
    try:
        layout = default_layout() if args.layout in ("", "default") else load_layout(spec)
        strict = schema_errors(spec) if args.strict else []
    except LayoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    definitions = None
    if args.attributes:
        try:
            definitions = load_attributes(args.attributes, args.macros)
        except AttributesError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    report = check(layout, definitions)
    report.errors.extend(f"{w} (schema)" for w in strict)
    print(f"Layout: {layout.source}")
    if definitions is not None:
        print(f"Attributes: {args.attributes} ({len(definitions)} definitions)")
    print()
    print(report.render())
    if args.frame:  # dry run of the shapes (extra dimensions)
        from .tools.shapes import report as shapes

        try:
            print("\n" + shapes(args, layout))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 1 if report.errors else 0


def build_parser() -> argparse.ArgumentParser:
    from .commands import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="nexus-writer-ioc", formatter_class=HelpFormatter,
        description="NDFileHDF5-compatible NeXus file writer IOC (caproto).",
        epilog="'nexus-writer-ioc COMMAND --help' shows a command's options with their\n"
               "defaults, an example and the EPICS environment it uses.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "check-layout", help="print the tree a layout produces, with warnings",
        formatter_class=HelpFormatter,
        description="Print every group, dataset and attribute a layout produces, with its "
                    "source and timing, where each NDAttribute lands, and warnings; exit 1 "
                    "on errors.",
        epilog="example:\n  nexus-writer-ioc check-layout layouts/nexus_demo.xml "
               "--attributes layouts/demo_attributes.xml --macros P=13SIM1:\n\n"
               "EPICS environment: not used (no Channel Access).")
    p.add_argument("layout", help="layout XML file, inline XML, or 'default'")
    p.add_argument("--strict", action="store_true",
                   help="also validate against the layout schema (layouts/hdf5_layout.xsd: "
                   "ADCore's XSD + root attributes); departures are errors (exit 1). ADCore "
                   "and the IOC do not require it")
    p.add_argument("--attributes", metavar="FILE",
                   help="NDAttributes XML file or inline XML (default: none)")
    p.add_argument("--macros", default="", metavar="MACROS",
                   help='NDAttributesMacros for the attributes file, e.g. "P=13SIM1:,R=cam1:"')
    from .tools.shapes import add_arguments as add_shape_arguments

    add_shape_arguments(p)
    p.set_defaults(func=_check_layout)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands():
    """Sub-commands living in their own modules (imported lazily when run)."""
    from . import commands

    return commands.REGISTRY


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
