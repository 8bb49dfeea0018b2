"""Run lm-evaluation-harness on a saved hybrid model.

Our model type ``hybrid`` is registered with ``AutoConfig`` / ``AutoModelForCausalLM`` by
``hybrid.blocks.register()``; a bare ``lm_eval`` process never calls it, so ``lm_eval --model hf
--model_args pretrained=DIR`` alone fails with "Unrecognized model ... model_type hybrid". This entry
point registers first and then hands every argument to lm-eval's own CLI::

    python -m hybrid.eval.lm_eval_main --model hf \\
        --model_args pretrained=runs/tiny-cpu,dtype=float32,max_length=4096 \\
        --tasks TASKS --batch_size 8 --device cpu

No ``trust_remote_code`` is needed (nothing is loaded from the model folder but weights, config and
tokenizer). From Python, ``hybrid_lm(path, **kwargs)`` returns an ``lm_eval`` ``HFLM`` for
``lm_eval.simple_evaluate(model=...)``. lm-eval is an optional dependency (``pip install lm-eval``).
"""

from __future__ import annotations

import sys


def _require_lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise SystemExit("lm-evaluation-harness is not installed: pip install lm-eval") from None


def hybrid_lm(pretrained: str, **kwargs):
    """An lm-eval ``HFLM`` wrapping a saved hybrid model folder (``max_length`` defaults to the model's
    ``max_position_embeddings``)."""
    _require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    from hybrid.blocks import register

    register()  # model_type "hybrid"

    return HFLM(pretrained=pretrained, **kwargs)


def main(argv: list[str] | None = None) -> None:
    _require_lm_eval()
    from lm_eval.__main__ import cli_evaluate

    from hybrid.blocks import register

    register()  # model_type "hybrid", before lm-eval loads the model

    sys.argv = ["lm_eval", *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()


if __name__ == "__main__":
    main()
