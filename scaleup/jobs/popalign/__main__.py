"""``accelerate launch -m scaleup.jobs.popalign {generate,build-sets,train} --config FILE [--flags]``
(``python -m`` works too, on one process).

Bad input is one line on stderr and exit code 2, before any model loads.
"""

from __future__ import annotations

import json
import sys

from scaleup.job_config import ConfigError, parse_config
from scaleup.models.errors import ModelUnavailableError

USAGE = ("usage: python -m scaleup.jobs.popalign {generate,build-sets,train} [--config FILE] [--flags]\n"
         "  generate    images of the identity-neutral and identity-augmented prompts (seed 001, Sec. 5.1)\n"
         "  build-sets  sanity filter + winning/losing sets -> imagefolder dataset (Sec. 3.1)\n"
         "  train       PopAlign (eq. 9) or SFT on the dataset, full U-Net or LoRA\n"
         "  COMMAND --help lists every setting")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    from scaleup.jobs.popalign.config import BuildSetsConfig, GenerateConfig, TrainConfig
    from scaleup.training.loop import NonFiniteTrainingError

    stages = {"generate": GenerateConfig, "build-sets": BuildSetsConfig, "train": TrainConfig}
    if command not in stages:
        print(f"popalign: unknown command {command!r}; expected one of {', '.join(stages)}", file=sys.stderr)
        return 2
    prog = f"python -m scaleup.jobs.popalign {command}"
    try:
        config = parse_config(stages[command], rest, prog=prog)
        if command == "generate":
            from scaleup.jobs.popalign.generation import run_generate

            result = run_generate(config)
        elif command == "build-sets":
            from scaleup.jobs.popalign.build import run_build_sets

            result = run_build_sets(config)
            result = {k: result[k] for k in ("set_pairs", "rows", "images", "pairs_dropped", "prompts_without_sets",
                                             "filter")}
        else:
            from scaleup.jobs.popalign.train import run_train

            result = run_train(config)
            result.pop("config", None)
    except (ConfigError, ValueError) as err:
        print(f"popalign {command}: {err}", file=sys.stderr)
        return 2
    except (ModelUnavailableError, NonFiniteTrainingError) as err:  # not a usage error: a missing model, divergence
        print(f"popalign {command}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str))
    if command == "train":  # the last line says where the weights are, as the aDFT job's does
        print(_train_line(config, result), file=sys.stderr)
    return 0


def _train_line(config, result: dict) -> str:
    if not result.get("finished"):
        return (f"popalign train: stopped after {result['iterations_done']} steps; continue with --resume latest "
                f"--out {config.out}")
    weights = result.get("weights") or {}
    where = weights.get("lora") or weights.get("unet") or next(iter(weights.values()), config.out)
    return (f"popalign train: {result['iterations_done']} steps ({len(result.get('skipped_steps') or [])} skipped as "
            f"non-finite); wrote {config.out}/train_results.json; weights in {where}")


if __name__ == "__main__":
    sys.exit(main())
