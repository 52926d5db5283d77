"""``edgepack verify RUN_DIR``: re-hash a run folder's files against its manifest.json."""


def register(sub) -> None:
    p = sub.add_parser("verify", help="check a run folder's files against its manifest.json")
    p.add_argument("run_dir", help="a run folder (with manifest.json)")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    import sys

    from edgepack.pipeline.verify import verify_run

    found = verify_run(args.run_dir)
    problems = [(kind, name) for kind in ("changed", "missing", "extra")
                for name in found[kind]]
    for kind, name in problems:
        print(f"{kind}: {name}")
    if problems:
        print(f"edgepack: {args.run_dir} does not match its manifest: "
              f"{len(found['changed'])} changed, {len(found['missing'])} missing, "
              f"{len(found['extra'])} extra", file=sys.stderr)
        return 1
    print(f"{args.run_dir}: every file matches manifest.json")
    return 0
