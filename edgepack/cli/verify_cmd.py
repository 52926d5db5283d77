"""``edgepack verify DIR``: check a run folder or a package against its manifest.json."""

LABELS = {"changed": "changed", "missing": "missing", "extra": "extra",
          "symlink": "symlinked", "special": "special"}


def register(sub) -> None:
    p = sub.add_parser("verify", help="check a run folder's or a package's files against its "
                                      "manifest.json (sizes, then sha256)")
    p.add_argument("run_dir", help="a run folder or a package folder (with manifest.json)")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    import sys

    from edgepack.pipeline.verify import KINDS, verify_folder

    verdict = verify_folder(args.run_dir)
    for kind in KINDS:
        for entry in verdict.found[kind]:
            print(f"{kind}: {entry}")
    if not verdict.ok:
        counts = ", ".join(f"{len(verdict.found[k])} {LABELS[k]}" for k in KINDS)
        print(f"edgepack: {args.run_dir} does not match its manifest: {counts}",
              file=sys.stderr)
        return 1
    print(f"{args.run_dir}: every file matches manifest.json ({verdict.kind})")
    return 0
