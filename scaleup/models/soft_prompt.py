"""Soft prompts: K learned token embeddings prefixed to every prompt in the CLIP text encoder (seed 000 Table 1).

Seed 000 ([0129], Table 1; claims 14) finetunes "five soft tokens as prompt prefix": the official aDFT code adds K
placeholder tokens to the tokenizer, prepends them to the prompt and learns their input embeddings (position
embeddings and the frozen transformer unchanged). Here the K vectors are a :class:`SoftPrompt` module; the token
ids of a prompt become ``[BOS, p_1..p_K, prompt tokens, EOS, pad...]`` (the prompt truncated to make room, the
context length unchanged), and the embeddings at positions 1..K are replaced by the learned vectors on the way into
the encoder. The replacement is a forward hook on the encoder's input-embedding layer, because transformers'
``CLIPTextModel.forward`` accepts token ids only; everything else (position embeddings, causal mask, any LoRA on
the encoder, final layer norm) runs unchanged. Gradients reach the soft prompt through the hook.

Saved as one safetensors file (``soft_prompt.safetensors``: tensor ``embeddings`` of shape (K, d), metadata with
K, d and the position).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from scaleup.models.errors import ModelNotFoundError

SOFT_PROMPT_FILE = "soft_prompt.safetensors"
TEXTUAL_INVERSION_FILE = "textual_inversion.safetensors"
#: The placeholder a textual-inversion export registers: write it first in the prompt ("<fairdiff> a photo of ...")
TEXTUAL_INVERSION_TOKEN = "<fairdiff>"
_FORMAT = "fairdiff.soft_prompt.v1"


class SoftPrompt(nn.Module):
    """K learned embeddings of a text encoder's input width, inserted right after the start token.

    Parameters
    ----------
    embeddings : (K, d) initial values (copied).
    """

    def __init__(self, embeddings: torch.Tensor):
        super().__init__()
        if embeddings.ndim != 2 or embeddings.shape[0] < 1:
            raise ValueError(f"embeddings must have shape (K, d) with K >= 1; got {tuple(embeddings.shape)}")
        self.embeddings = nn.Parameter(embeddings.detach().clone())

    @property
    def num_tokens(self) -> int:
        return self.embeddings.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.embeddings.shape[1]

    @classmethod
    def from_token_ids(cls, text_encoder: nn.Module, token_ids: Sequence[int]) -> SoftPrompt:
        """Initialised with the input embeddings of ``token_ids`` (e.g. the tokens of a word)."""
        table = text_encoder.get_input_embeddings().weight
        ids = torch.as_tensor(list(token_ids), dtype=torch.long, device=table.device)
        if ids.numel() < 1 or int(ids.min()) < 0 or int(ids.max()) >= table.shape[0]:
            raise ValueError(f"token_ids must be K >= 1 ids in [0, {table.shape[0]}); got {list(token_ids)!r}")
        return cls(table[ids].float())

    @classmethod
    def from_text_encoder(cls, text_encoder: nn.Module, num_tokens: int = 5, *, seed: int = 0) -> SoftPrompt:
        """Initialised with K random rows of the vocabulary's embeddings, as the aDFT code initialises its tokens.

        ``num_tokens`` = 5 is seed 000's Table 1; ``seed`` picks the rows.
        """
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"num_tokens must be a positive integer; got {num_tokens!r}")
        vocab = text_encoder.get_input_embeddings().weight.shape[0]
        rows = torch.randperm(vocab, generator=torch.Generator().manual_seed(seed))[:num_tokens]
        return cls.from_token_ids(text_encoder, rows.tolist())

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path``: a ``.safetensors`` file, or a folder that then holds soft_prompt.safetensors."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path.mkdir(parents=True, exist_ok=True)
            path = path / SOFT_PROMPT_FILE
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"embeddings": self.embeddings.detach().float().cpu().contiguous()}, str(path),
                  metadata={"format": _FORMAT, "num_tokens": str(self.num_tokens),
                            "hidden_size": str(self.hidden_size), "position": "prefix"})
        return path

    def save_textual_inversion(self, path: str | os.PathLike) -> Path:
        """Write the K vectors as a diffusers textual-inversion file (``{token: (K, d)}``, safetensors).

        ``pipe.load_textual_inversion(path, token="<fairdiff>")`` registers K tokens ("<fairdiff>", "<fairdiff>_1",
        ...); the prompt "<fairdiff> a photo of ..." then becomes [BOS, the K vectors, the prompt, EOS], exactly the
        ids :func:`soft_prompt_input_ids` builds, with the empty negative prompt unchanged as here: the same images
        with no fairdiff code (the prompt's own words are cut at the context length the same way).
        """
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path.mkdir(parents=True, exist_ok=True)
            path = path / TEXTUAL_INVERSION_FILE
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        save_file({TEXTUAL_INVERSION_TOKEN: self.embeddings.detach().float().cpu().contiguous()}, str(path))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: torch.device | str | None = None,
             dtype: torch.dtype | None = None) -> SoftPrompt:
        """Read a soft prompt written by :meth:`save` (a file, or a folder holding soft_prompt.safetensors)."""
        from safetensors import safe_open

        path = Path(path).expanduser()
        if path.is_dir():
            path = path / SOFT_PROMPT_FILE
        if not path.is_file():
            raise ModelNotFoundError(f"soft prompt: {str(path)!r} does not exist. Expected a file written by "
                                     f"SoftPrompt.save, or a folder holding {SOFT_PROMPT_FILE}.")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != _FORMAT or "embeddings" not in f.keys():
                    raise ValueError(f"{str(path)!r} is not a soft prompt written by SoftPrompt.save "
                                     f"(metadata format {meta.get('format')!r}, expected {_FORMAT!r})")
                embeddings = f.get_tensor("embeddings")
        except ValueError:
            raise
        except Exception as err:  # safetensors' own error type for a damaged or foreign file (issue 19)
            raise ValueError(f"soft prompt: {str(path)!r} is damaged or not a safetensors file "
                             f"({type(err).__name__}: {err}); expected a file written by SoftPrompt.save") from None
        prompt = cls(embeddings)
        return prompt.to(device=device, dtype=dtype) if device is not None or dtype is not None else prompt


def soft_prompt_input_ids(tokenizer, prompts: Sequence[str], num_tokens: int) -> torch.Tensor:
    """Token ids ``[BOS, K placeholders, prompt..., EOS, pad...]`` of the tokenizer's context length, (B, L).

    The placeholders carry the start token's id (never the end-of-text id, which CLIP's pooling looks for); their
    embeddings are replaced by the soft prompt inside :func:`encode_with_soft_prompt`.
    """
    length = tokenizer.model_max_length
    if not 0 <= num_tokens <= length - 2:
        raise ValueError(f"num_tokens must be in [0, {length - 2}] for a context of {length}; got {num_tokens}")
    ids = tokenizer(list(prompts), padding="max_length", max_length=length - num_tokens, truncation=True,
                    return_tensors="pt").input_ids
    placeholders = torch.full((ids.shape[0], num_tokens), tokenizer.bos_token_id, dtype=ids.dtype)
    return torch.cat([ids[:, :1], placeholders, ids[:, 1:]], dim=1)


@contextmanager
def _prefix_hook(text_encoder: nn.Module, soft_prompt: SoftPrompt):
    k = soft_prompt.num_tokens

    def replace(module, args, output):
        prefix = soft_prompt.embeddings.to(output.dtype).unsqueeze(0).expand(output.shape[0], -1, -1)
        return torch.cat([output[:, :1], prefix, output[:, 1 + k:]], dim=1)

    handle = text_encoder.get_input_embeddings().register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


def encode_with_soft_prompt(text_encoder: nn.Module, tokenizer, prompts: Sequence[str],
                            soft_prompt: SoftPrompt | None) -> torch.Tensor:
    """The text encoder's last hidden states (B, L, d) of ``prompts`` with ``soft_prompt`` as prefix.

    What Stable Diffusion's U-Net is conditioned on (pass it as ``prompt_embeds``). Differentiable in the soft prompt
    and in any trainable parameter of the encoder. ``soft_prompt=None`` encodes the plain prompts (no prefix).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    device = text_encoder.device
    if soft_prompt is None:
        ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        return text_encoder(ids.to(device))[0]
    width = text_encoder.get_input_embeddings().weight.shape[1]
    if soft_prompt.hidden_size != width:
        raise ValueError(f"soft_prompt has width {soft_prompt.hidden_size} but the text encoder's token embeddings "
                         f"have width {width}")
    ids = soft_prompt_input_ids(tokenizer, prompts, soft_prompt.num_tokens).to(device)
    with _prefix_hook(text_encoder, soft_prompt):
        return text_encoder(ids)[0]
