"""``edgepack bench --privacy``: membership inference on each benchmarked model.

The flags fill one :class:`edgepack.bench.privacy.PrivacyConfig`; ``--members`` and
``--non-members`` are ``.npz`` files (the model's inputs by name, plus ``labels``), checked
before any model runs. ``--references`` names ONNX reference models trained like the target
on data disjoint from both sets: with at least two, the LiRA-style attack runs too.
"""

from __future__ import annotations


def register(p) -> None:
    from edgepack.core.checks import MAX_RESAMPLES

    g = p.add_argument_group("privacy (membership inference)")
    g.add_argument("--privacy", action="store_true",
                   help="attack each model's training-set membership; needs --members and "
                        "--non-members")
    g.add_argument("--members", default=None, metavar="M.npz",
                   help="samples the models trained on: inputs by name, plus labels")
    g.add_argument("--non-members", default=None, metavar="N.npz",
                   help="as many samples from the same distribution the models never saw")
    g.add_argument("--privacy-attacks", default=None, metavar="NAME[,NAME...]",
                   help="loss, confidence, entropy, lira (default: all that can run)")
    g.add_argument("--references", nargs="+", default=None, metavar="REF.onnx",
                   help="reference models trained like the target on other data, for lira")
    g.add_argument("--bootstrap", type=str, default=None, metavar="N",
                   help=f"bootstrap resamples of the 95%% intervals, 20 to "
                        f"{MAX_RESAMPLES:,} (default 200)")


def config_from_args(args):
    """The PrivacyConfig the flags describe, or None without ``--privacy``; every flag is
    checked here, before anything runs."""
    from edgepack.bench.privacy import ATTACKS, PrivacyConfig
    from edgepack.core.checks import MAX_RESAMPLES

    given = [f for f, v in (("--members", args.members), ("--non-members", args.non_members),
                            ("--privacy-attacks", args.privacy_attacks),
                            ("--references", args.references),
                            ("--bootstrap", args.bootstrap)) if v is not None]
    if not args.privacy:
        if given:
            raise ValueError(f"{given[0]} needs --privacy")
        return None
    if not args.members or not args.non_members:
        raise ValueError("--privacy needs --members M.npz (samples the model trained on) and "
                         "--non-members N.npz (as many it never saw)")
    if args.privacy_attacks is not None:
        attacks = tuple(a.strip() for a in args.privacy_attacks.split(",") if a.strip())
    else:
        attacks = tuple(a for a in ATTACKS if a != "lira" or args.references)
    if "lira" in attacks and len(args.references or []) < 2:
        raise ValueError("--privacy-attacks lira is calibrated on reference models: pass "
                         "--references REF.onnx REF.onnx ... (at least 2, each trained like "
                         "the target on data disjoint from --members and --non-members)")
    if args.references and "lira" not in attacks:
        raise ValueError("--references is read by the lira attack only; add it to "
                         "--privacy-attacks")
    bootstrap = 200
    if args.bootstrap is not None:
        try:
            bootstrap = int(args.bootstrap)
        except ValueError:
            raise ValueError(f"--bootstrap {args.bootstrap!r} is not valid; expected an "
                             f"integer from 20 to {MAX_RESAMPLES:,}") from None
    try:
        # samples stays 0: it is how many the pipeline draws; here the files decide
        return PrivacyConfig(attacks=attacks, bootstrap=bootstrap,
                             references=len(args.references or []))
    except ValueError as exc:
        raise ValueError(str(exc).replace("privacy.attacks", "--privacy-attacks")
                         .replace("privacy.bootstrap", "--bootstrap")) from exc


def evaluate_models(args, config) -> list[dict]:
    """Each model's membership figures, on the checked sets (references run once)."""
    from edgepack.bench.privacy import evaluate_membership, load_member_sets
    from edgepack.bench.privacy.membership import session_logits
    from edgepack.bench.robustness import robustness_session

    sets = load_member_sets(args.members, args.non_members)
    references = []
    for path in args.references or []:
        session = robustness_session(path)
        references.append((session_logits(session, feeds_for(session, sets.members, path)),
                           session_logits(session, feeds_for(session, sets.non_members, path))))
    found = []
    for path in args.models:
        session = robustness_session(path)
        feeds_for(session, sets.members, path)
        found.append(evaluate_membership(session, sets, config, references or None))
    return found


def feeds_for(session, arrays: dict, path) -> dict:
    """The arrays the model takes, checked by name, type and shape (one line if not)."""
    from edgepack.bench.inputs import check_feeds

    return check_feeds(session, arrays, f"--members/--non-members for {path}")
