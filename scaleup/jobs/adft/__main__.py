"""``accelerate launch -m scaleup.jobs.adft --preset gender --config cfg.yaml [--flag value ...]``

(or ``python -m scaleup.jobs.adft ...`` on one device). Every field of
:class:`scaleup.jobs.adft.config.AdftConfig` is a flag; a flag wins over the config file. Bad settings stop the run
before anything is loaded, with one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from scaleup.job_config import ConfigError, parse_config
    from scaleup.jobs.adft.config import AdftConfig
    from scaleup.models.errors import ModelUnavailableError
    from scaleup.training.loop import NonFiniteTrainingError

    try:
        config = parse_config(AdftConfig, argv, prog="accelerate launch -m scaleup.jobs.adft",
                              description="aDFT of Stable Diffusion (seed 000, Algorithm A.1)")
        from scaleup.jobs.adft.job import run_job

        results = run_job(config)
    except (ConfigError, ValueError, ModelUnavailableError, FileNotFoundError) as err:
        print(f"scaleup.jobs.adft: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteTrainingError as err:
        print(f"scaleup.jobs.adft: error: {err}", file=sys.stderr)
        return 1
    if results:
        last = results.get("last") or {}
        where = (f"weights in {results['final_weights']}" if results.get("final_weights") else
                 f"stopped before the end: continue with --resume latest")
        skipped = len(results.get("skipped_steps") or [])
        print(f"scaleup.jobs.adft: {results['iterations_done']} iterations ({skipped} skipped as non-finite), "
              f"last loss {last.get('loss')}; "
              f"wrote {config.output_dir}/results.json; {where}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
