"""``unicorpus train``: train on packed shards, alone or under ``torchrun`` (one process per GPU, or gloo on CPUs)."""

from __future__ import annotations

import os


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train on packed/ shards (also under torchrun); checkpoints and TensorBoard logs in output",
        epilog="Overrides: dotted.key=value (YAML values), e.g. schedule.steps=100 optim.lr=1e-4. "
               "Many processes: torchrun --nproc_per_node N -m cli.main train --config ...")
    parser.add_argument("--config", required=True, help="trainer YAML (training/configs/ has one per paper)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest complete checkpoint in <output>/checkpoints")
    parser.add_argument("--tiny", action="store_true", help="apply the config's `tiny:` overrides (runs on a CPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, applied last")
    parser.set_defaults(run=_run)


def _run(args, extra) -> int:
    from training.config import load_train_config

    config = load_train_config(args.config, tiny=args.tiny, overrides=args.overrides)  # fails before any step
    from training.loop import train

    result = train(config, resume=args.resume, show_progress=not args.quiet)
    if int(os.environ.get("RANK", 0)) == 0:
        print(format_result(result, config.output))
    return 0


def format_result(result, output: str) -> str:
    start = f"resumed at step {result.resumed_from}, " if result.resumed_from is not None else ""
    lines = [f"train: {start}{result.steps} steps; output {output}", "losses (last log window), per task:"]
    tasks: dict[str, list[str]] = {}
    for key, value in sorted(result.losses.items()):
        task, _, objective = key.partition("/")
        tasks.setdefault(task, []).append(f"{objective} {value:.4f}")
    lines += [f"  {task:<22} {', '.join(parts)}" for task, parts in tasks.items()]
    for row in result.evaluations[-1:]:
        lines.append("eval (zero-shot retrieval): " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "step"))
    lines.append(f"checkpoint: {result.checkpoint}")
    lines.append(f"TensorBoard: tensorboard --logdir {os.path.join(output, 'tensorboard')}")
    return "\n".join(lines)
