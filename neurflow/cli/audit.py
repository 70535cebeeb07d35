"""Audit commands: ``neurflow audit SPEC CIRCUIT...`` and ``neurflow audit-review``."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

AUDIT_FILE = "audit.json"
REVIEWS_FILE = "reviews.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    from neurflow.atlas.diff import MIN_DELTA, MIN_SIMILARITY
    from neurflow.core.audit import AuditSettings

    d = AuditSettings()
    p = subparsers.add_parser(
        "audit", help="rank the groups of a model's circuits that look like shortcuts, with their evidence",
        description="Find the groups a person should look at: important to a class, yet switching them off "
                    "moves the class's logit on images of other classes, their label is not among the class's "
                    "expected concepts, or unrelated classes use the same neurons. Writes OUT/audit.json; "
                    "verdicts recorded with `neurflow audit-review` (OUT/reviews.json) apply again on a rerun.")
    p.add_argument("spec", help="the job spec the circuits were made with (its model; its images unless --images)")
    p.add_argument("circuits", nargs="+", help="circuit.json files of that model, one per class")
    p.add_argument("--out", required=True, help="folder for audit.json (and reviews.json)")
    p.add_argument("--images", help="images for the off-class ablation (default: the spec's data.images); an image "
                                    "in a folder named like a class belongs to it, others to the class the model predicts")
    p.add_argument("--expected", help="JSON file: class index -> list of the concepts the class should use")
    p.add_argument("--related", help="JSON file: class index -> classes that legitimately share its content")
    p.add_argument("--no-ablation", action="store_true", help="skip the off-class ablation (labels and sharing only)")
    p.add_argument("--controls", type=int, default=d.controls, help=f"random neuron sets per size (default {d.controls})")
    p.add_argument("--max-images", type=int, default=d.max_images,
                   help=f"off-class images per class (default {d.max_images})")
    p.add_argument("--labelstudio", action="store_true",
                   help="also write a Label Studio project (config + one task per finding) into OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_audit)

    r = subparsers.add_parser("audit-review", help="confirm or dismiss a finding of an audit (kept across reruns)",
                              description="Record a verdict on a finding of OUT/audit.json in OUT/reviews.json.")
    r.add_argument("out", help="the audit's folder (holds audit.json)")
    r.add_argument("key", nargs="?", help="the finding's key (audit.json, or `neurflow audit`'s listing)")
    verdict = r.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--from-labelstudio", metavar="EXPORT.json",
                         help="take the verdicts of a Label Studio JSON export of the --labelstudio project")
    verdict.add_argument("--dismiss", action="store_const", const="dismissed", dest="verdict",
                         help="the finding is not a shortcut of the model (takes no value)")
    verdict.add_argument("--confirm", action="store_const", const="confirmed", dest="verdict",
                         help="the finding is a real shortcut (takes no value)")
    verdict.add_argument("--reopen", action="store_const", const="open", dest="verdict",
                         help="drop the verdict recorded on the finding (takes no value)")
    r.add_argument("--note", default="", help="why")
    r.add_argument("--by", default="human", help="who (default: human)")
    r.set_defaults(func=cmd_review)

    d = subparsers.add_parser("diff", help="what changed between two checkpoints' circuits (diff.json + diff.html)",
                              description="Match each class's groups across two checkpoints (member neurons for one "
                                          "architecture, labels otherwise) and list what appeared, vanished, grew or shrank.")
    d.add_argument("--before", nargs="+", required=True, help="circuit.json files of the first checkpoint")
    d.add_argument("--after", nargs="+", required=True, help="circuit.json files of the second checkpoint (same classes)")
    d.add_argument("--out", required=True, help="folder for diff.json and diff.html")
    d.add_argument("--min-similarity", type=float, default=MIN_SIMILARITY,
                   help=f"Jaccard (or label match) to pair two groups, in (0, 1] (default {MIN_SIMILARITY})")
    d.add_argument("--min-delta", type=float, default=MIN_DELTA,
                   help=f"importance change that counts as grew/shrank, in [0, 1] (default {MIN_DELTA})")
    d.set_defaults(func=cmd_diff)


def _class_map(path: str | None, what: str) -> dict[int, list]:
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read {what} file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{what} file {path} must be a JSON object: class index -> list, e.g. {{\"3\": [...]}}")
    try:
        return {int(k): v for k, v in data.items()}
    except ValueError:
        raise ValueError(f"{what} file {path}: keys must be class indices, got {list(data)}") from None


def _reviews(out: Path):
    from neurflow.core.audit import Reviews

    path = out / REVIEWS_FILE
    return Reviews.from_json(path.read_bytes()) if path.is_file() else Reviews()


def cmd_audit(args: argparse.Namespace) -> int:
    import msgspec

    from neurflow.atlas.audit import audit_circuits, folder_labels
    from neurflow.atlas.build import AtlasInput
    from neurflow.core.audit import AuditSettings
    from neurflow.core.images import ImageSet, Preprocess
    from neurflow.core.jobspec import load_jobspec
    from neurflow.core.model_intake import load_model
    from neurflow.core.pipeline import resolve
    from neurflow.progress import ProgressBars

    try:
        settings = msgspec.convert({"controls": args.controls, "max_images": args.max_images}, AuditSettings)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{exc} (accepted: --controls 2..200, --max-images 4..10000)") from None
    spec, base = load_jobspec(args.spec)
    inputs = [AtlasInput(circuit=c, circuit_id=Path(p).as_posix()) for p, c in zip(args.circuits, _read_circuits(args.circuits))]
    _check_weights(inputs, resolve(base, spec.model.weights))
    model = images = labels = None
    circuits_root = resolve(base, spec.data.images)  # the circuits' exemplar paths are relative to it
    images_root = Path(args.images) if args.images else circuits_root
    if not args.no_ablation:
        model = load_model(spec.model.arch, resolve(base, spec.model.weights), spec.model.num_classes)
        images = ImageSet.from_folder(images_root, Preprocess(spec.model.input_size, spec.model.mean, spec.model.std))
        names = [c.target.name for c in (e.circuit for e in inputs)]
        class_names = spec.model.class_names if isinstance(spec.model.class_names, list) else None
        labels = folder_labels(images, class_names) if class_names else None
        if labels is None and any(names):
            known = {e.circuit.target.class_index: e.circuit.target.name for e in inputs if e.circuit.target.name}
            labels = folder_labels(images, [known.get(i, f"\0{i}") for i in range(spec.model.num_classes)])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bars = None if args.quiet else ProgressBars()
    audit = audit_circuits(inputs, model, images, labels=labels, expected=_class_map(args.expected, "expected"),
                           related=_class_map(args.related, "related"), settings=settings, reviews=_reviews(out),
                           images_root=str(circuits_root), progress=bars)
    if bars is not None:
        bars.close()
    _write(audit, out, args.labelstudio)
    findings = audit.findings()
    print(f"audit: {out / AUDIT_FILE}: {len(findings)} open findings in {len(audit.classes)} classes "
          f"({audit.seconds:.1f} s)")
    for cls in audit.classes:
        for f in cls.findings:
            mark = "" if f.verdict == "open" else f" [{f.verdict}]"
            print(f"  {f.key}{mark} score {f.score:.2f}: {f.sentence}")
    for warning in audit.warnings:
        print(f"note: {warning}")
    return 0


def _write(audit, out: Path, labelstudio: bool = False) -> None:
    from neurflow.viewer.audit_page import render_audit_page, write_page

    (out / AUDIT_FILE).write_text(audit.to_json(), encoding="utf-8")
    write_page(render_audit_page(audit), out / "audit.html")
    if labelstudio:
        from neurflow.exports.audit_tasks import write_audit_project

        write_audit_project(audit, out)


def _read_circuits(paths: list[str]):
    from neurflow.core.circuit_arrays import read_circuit

    found = []
    for path in paths:
        try:
            found.append(read_circuit(path))  # a compact document reads its arrays from the sidecar beside it
        except OSError as exc:
            raise ValueError(f"cannot read circuit {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return found


def _check_weights(inputs, weights: Path) -> None:
    """The ablations must run on the network the circuits explain: refuse other weights."""
    from neurflow.core.hashing import sha256_file

    if not weights.is_file():
        return  # a published-weights name: the model intake resolves it (or says why it cannot)
    digest = sha256_file(weights)
    for entry in inputs:
        theirs = entry.circuit.model.weights_sha256
        if theirs and theirs != digest:
            raise ValueError(f"circuit {entry.circuit_id} was made with weights sha256 {theirs[:12]}..., the spec's "
                             f"{weights} are {digest[:12]}...; audit a model's circuits with that model's spec")


def _save(out: Path, audit, reviews) -> None:
    (out / REVIEWS_FILE).write_text(reviews.to_json(), encoding="utf-8")
    _write(audit, out)


def cmd_review(args: argparse.Namespace) -> int:
    from neurflow.atlas.audit import apply_reviews
    from neurflow.core.audit import Audit, Review

    out = Path(args.out)
    path = out / AUDIT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {AUDIT_FILE} in {out}; run `neurflow audit ... --out {out}` first")
    audit = Audit.from_json(path.read_bytes())
    reviews = _reviews(out)
    if args.from_labelstudio:
        from neurflow.exports.audit_tasks import reviews_from_labelstudio

        try:
            exported = json.loads(Path(args.from_labelstudio).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read the Label Studio export {args.from_labelstudio}: {exc}") from None
        before = len(reviews.entries)
        reviews = reviews_from_labelstudio(exported, audit, reviews)
        apply_reviews(audit, reviews)
        _save(out, audit, reviews)
        print(f"{len(reviews.entries) - before} new verdicts from {args.from_labelstudio} (kept in {out / REVIEWS_FILE})")
        return 0
    if not args.key:
        raise ValueError("name the finding's KEY, or pass --from-labelstudio EXPORT.json")
    finding = next((f for f in audit.findings(include_dismissed=True) if f.key == args.key), None)
    if finding is None:
        keys = [f.key for f in audit.findings(include_dismissed=True)]
        raise ValueError(f"no finding {args.key!r} in {path}; its findings are {keys}")
    at = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    reviews.record(finding, Review(verdict=args.verdict, by=args.by, at=at, note=args.note))
    _save(out, audit, reviews)
    print(f"{args.key}: {args.verdict} (kept in {out / REVIEWS_FILE}; a rerun of the audit applies it again)")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from neurflow.atlas.diff import diff_circuits
    from neurflow.viewer.audit_page import render_diff_page, write_page

    diff = diff_circuits(_read_circuits(args.before), _read_circuits(args.after), min_similarity=args.min_similarity,
                         min_delta=args.min_delta)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "diff.json").write_text(diff.to_json(), encoding="utf-8")
    write_page(render_diff_page(diff), out / "diff.html")
    print(f"diff: {out / 'diff.json'} and {out / 'diff.html'}")
    for cls in diff.classes:
        moved = [c for c in cls.changes if c.change != "kept"]
        head = ", ".join(f"{c.change} {(c.after or c.before).group} in {c.layer} ({c.delta:+.2f})" for c in moved[:3])
        print(f"  class {cls.class_index}: {len(moved)} changes{': ' + head if head else ''}")
    return 0
