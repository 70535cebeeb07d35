"""Audit commands: ``neurflow audit SPEC CIRCUIT...`` and ``neurflow audit-review``."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

AUDIT_FILE = "audit.json"
REVIEWS_FILE = "reviews.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    from neurflow.atlas.diff import MAX_IMAGES, MIN_DELTA, MIN_SIMILARITY
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
    d.add_argument("--before-spec", help="the job spec the first circuits were made with (its model); with "
                                         "--after-spec, each change gets its off-class reliance and the changes "
                                         "are ordered by it")
    d.add_argument("--after-spec", help="the job spec the second circuits were made with (its model; its images "
                                        "unless --images)")
    d.add_argument("--images", help="images for the off-class reliance (default: the second spec's data.images); "
                                    "each must lie in a folder named like its class")
    d.add_argument("--related", help="JSON file: class index -> classes that legitimately share its content "
                                     "(their images are not off-class for it)")
    d.add_argument("--max-images", type=int, default=MAX_IMAGES,
                   help=f"off-class images per class for the reliance (default {MAX_IMAGES})")
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

    from neurflow.atlas.audit import audit_circuits
    from neurflow.core.audit import AuditSettings
    from neurflow.core.pipeline import resolve
    from neurflow.progress import ProgressBars

    try:
        settings = msgspec.convert({"controls": args.controls, "max_images": args.max_images}, AuditSettings)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{exc} (accepted: --controls 2..200, --max-images 4..10000)") from None
    inputs = _inputs(args.circuits)
    spec, base = _spec_of(args.spec, inputs)
    model = images = labels = None
    circuits_root = resolve(base, spec.data.images)  # the circuits' exemplar paths are relative to it
    if not args.no_ablation:
        model = _model(spec, base)
        images, labels = _labeled_images(spec, Path(args.images) if args.images else circuits_root, inputs)
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


def _inputs(paths: list[str]):
    from neurflow.atlas.build import AtlasInput

    return [AtlasInput(circuit=c, circuit_id=Path(p).as_posix()) for p, c in zip(paths, _read_circuits(paths))]


def _spec_of(path: str, inputs):
    """The job spec at ``path`` and its folder, once the circuits are known to be of its weights."""
    from neurflow.core.jobspec import load_jobspec
    from neurflow.core.pipeline import resolve

    spec, base = load_jobspec(path)
    _check_weights(inputs, resolve(base, spec.model.weights))
    return spec, base


def _model(spec, base):
    from neurflow.core.model_intake import load_model
    from neurflow.core.pipeline import resolve

    return load_model(spec.model.arch, resolve(base, spec.model.weights), spec.model.num_classes)


def _labeled_images(spec, root: Path, inputs):
    """The images under ``root`` as ``spec``'s model reads them, and each one's class: that of a folder
    of its path named like a class (the spec's class names, else the circuits'), None elsewhere."""
    from neurflow.atlas.offclass import folder_labels
    from neurflow.core.class_names import class_folder_names
    from neurflow.core.images import ImageSet, Preprocess

    images = ImageSet.from_folder(root, Preprocess(spec.model.input_size, spec.model.mean, spec.model.std))
    listed = spec.model.class_names if isinstance(spec.model.class_names, list) else None
    names = class_folder_names(listed, spec.model.num_classes, [e.circuit for e in inputs])
    return images, folder_labels(images, names)


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
    """Ablations (the audit's, the diff's reliance) must run on the network the circuits explain: refuse
    other weights."""
    from neurflow.core.hashing import sha256_file

    if not weights.is_file():
        return  # a published-weights name: the model intake resolves it (or says why it cannot)
    digest = sha256_file(weights)
    for entry in inputs:
        theirs = entry.circuit.model.weights_sha256
        if theirs and theirs != digest:
            raise ValueError(f"circuit {entry.circuit_id} was made with weights sha256 {theirs[:12]}..., the spec's "
                             f"{weights} are {digest[:12]}...; give a model's circuits with that model's spec")


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
    from neurflow.core.pipeline import resolve
    from neurflow.viewer.audit_page import render_diff_page, write_page

    before, after = _inputs(args.before), _inputs(args.after)
    models = images = labels = None
    if (args.before_spec is None) != (args.after_spec is None):
        raise ValueError("the off-class reliance needs both networks: give --before-spec and --after-spec, or neither")
    if args.before_spec is not None:
        (spec_a, base_a), (spec_b, base_b) = _spec_of(args.before_spec, before), _spec_of(args.after_spec, after)
        inputs_a = (spec_a.model.input_size, spec_a.model.mean, spec_a.model.std)
        inputs_b = (spec_b.model.input_size, spec_b.model.mean, spec_b.model.std)
        if inputs_a != inputs_b:
            raise ValueError(f"the two specs prepare images differently (input_size, mean, std: {inputs_a} and "
                             f"{inputs_b}); the reliance shows both networks the same images: give specs of one "
                             "model's checkpoints")
        models = (_model(spec_a, base_a), _model(spec_b, base_b))
        root = Path(args.images) if args.images else resolve(base_b, spec_b.data.images)
        images, labels = _labeled_images(spec_b, root, after)
    elif args.images or args.related:
        raise ValueError("--images and --related are for the off-class reliance: give --before-spec and --after-spec too")
    diff = diff_circuits([e.circuit for e in before], [e.circuit for e in after], min_similarity=args.min_similarity,
                         min_delta=args.min_delta, models=models, images=images, labels=labels,
                         related=_class_map(args.related, "related"), max_images=args.max_images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "diff.json").write_text(diff.to_json(), encoding="utf-8")
    write_page(render_diff_page(diff), out / "diff.html")
    print(f"diff: {out / 'diff.json'} and {out / 'diff.html'}; ordered by {diff.order.replace('_', ' ')}")
    for cls in diff.classes:
        moved = [c for c in cls.changes if c.change != "kept" or c.reliance is not None]
        print(f"  class {cls.class_index}: {len(moved)} changes{': ' if moved else ''}"
              + ", ".join(_summary(c) for c in moved[:3]))
    for warning in diff.warnings:
        print(f"note: {warning}")
    return 0


def _summary(c) -> str:
    said = f"{c.change} {(c.after or c.before).group} in {c.layer} ({c.delta:+.2f}"
    if c.reliance is not None:
        r = c.reliance
        said += f"; off-class reliance {r.increase:+.2f}: logit drop {r.drop_before:.2f} -> {r.drop_after:.2f}"
    return said + ")"
