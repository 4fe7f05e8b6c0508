"""How a pool's workers are launched: their command lines, from its ``PoolConfig``.

The gateway's ``pools:`` entry is the one source of truth for a pool. The same
frozen :class:`~backends.sglang.config.PoolConfig` the gateway routes with
renders here into the ``python -m sglang.launch_server`` argument list of one
worker (:func:`launch_args`), so model, tensor parallelism, dtypes, served name
and KV-memory fraction always agree with what the gateway assumes, and into the
``tollway emulate`` command that stands in for a worker without a GPU
(:func:`emulate_command`). :mod:`backends.sglang.manifest` puts these commands
into the pool's Kubernetes objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.sglang.config import PoolConfig
from gpu_catalog.capacity import default_mem_fraction_static
from gpu_catalog.specs import get_gpu, get_model
from tollway.errors import ConfigError

#: Port every SGLang worker listens on inside its pod.
SGLANG_PORT = 30000
#: SGLang's name for an FP8 KV cache. E5M2 keeps FP16's exponent range, so it
#: needs no calibrated scaling factors (E4M3 does, via --quantization-param-path).
FP8_KV_CACHE_DTYPE = "fp8_e5m2"
#: SGLang tool-call parser by model family (prefix of the catalog name).
_TOOL_CALL_PARSERS = (
    ("llama-3", "llama3"),
    ("qwen2.5", "qwen25"),
    ("mixtral", "mistral"),
    ("mistral", "mistral"),
)


@dataclass(frozen=True, slots=True)
class LaunchOptions:
    """Deployment knobs that are not part of the gateway's pool schema.

    * ``priority``: pass ``--enable-priority-scheduling`` (the gateway sends a
      request priority when an agent type routed to the pool has one).
    * ``mem_fraction_static``: default is SGLang's own default for the GPU and
      TP degree, rendered explicitly so the worker and the gateway's capacity
      model agree on the KV-pool size.
    * ``max_total_tokens``: cap the KV pool (``--max-total-tokens``).
    * ``model_path``: a local path or Hugging Face id overriding the catalog's
      (required for int8 / int4 weights, which need a pre-quantized checkpoint).
    * ``extra_args``: appended verbatim.
    """

    priority: bool = False
    mem_fraction_static: float | None = None
    max_total_tokens: int | None = None
    model_path: str | None = None
    extra_args: tuple[str, ...] = ()


def hf_model_id(model_name: str) -> str:
    """The Hugging Face id of a catalog model (``llama-3.1-8b-instruct`` → ``meta-llama/…``)."""
    try:
        return get_model(model_name).hf_name
    except KeyError as exc:
        raise ConfigError(str(exc.args[0]), path="model.name") from None


def tool_call_parser(model_name: str) -> str | None:
    """SGLang's ``--tool-call-parser`` for the model's family, or ``None`` (no tool calls)."""
    name = model_name.lower()
    for prefix, parser in _TOOL_CALL_PARSERS:
        if name.startswith(prefix):
            return parser
    return None


_SHORT_DTYPES = {"float16": "fp16", "bfloat16": "bf16"}


def _activation_dtype(config: PoolConfig) -> str:
    return "float16" if config.model.weights_dtype == "fp16" else "bfloat16"


def launch_args(
    config: PoolConfig, options: LaunchOptions = LaunchOptions(), *, port: int = SGLANG_PORT
) -> list[str]:
    """Arguments of ``python -m sglang.launch_server`` for one worker of the pool."""
    model = config.model
    weights = model.weights_dtype
    if weights in ("int8", "int4") and options.model_path is None:
        raise ConfigError(
            f"{weights} weights need a pre-quantized checkpoint: pass its model path",
            path="model.weights_dtype",
        )
    activation = _activation_dtype(config)
    if model.kv_dtype in ("fp16", "bf16") and model.kv_dtype != _SHORT_DTYPES[activation]:
        # SGLang keeps a 16-bit KV cache in the model's dtype.
        raise ConfigError(
            f"a {model.kv_dtype} KV cache needs {model.kv_dtype} weights or an fp8 KV cache",
            path="model.kv_dtype",
        )
    fraction = options.mem_fraction_static
    if fraction is None:
        fraction = default_mem_fraction_static(get_gpu(config.gpu), model.tp)
    args = [
        "--model-path",
        options.model_path or hf_model_id(model.name),
        "--served-model-name",
        model.upstream_name,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--tp-size",
        str(model.tp),
        "--dtype",
        activation,
        "--kv-cache-dtype",
        FP8_KV_CACHE_DTYPE if model.kv_dtype == "fp8" else "auto",
        "--mem-fraction-static",
        f"{fraction:g}",
    ]
    if weights == "fp8":
        args += ["--quantization", "fp8"]
    if options.max_total_tokens is not None:
        args += ["--max-total-tokens", str(options.max_total_tokens)]
    parser = None if model.embedding else tool_call_parser(model.name)
    if parser is not None:
        args += ["--tool-call-parser", parser]
    if model.embedding:
        args.append("--is-embedding")
    if options.priority:
        args.append("--enable-priority-scheduling")
    args += ["--enable-metrics", "--enable-cache-report", *options.extra_args]
    return args


def launch_command(config: PoolConfig, options: LaunchOptions = LaunchOptions()) -> list[str]:
    """The whole command line of one SGLang worker of the pool."""
    return ["python3", "-m", "sglang.launch_server", *launch_args(config, options)]


def emulate_command(config: PoolConfig, options: LaunchOptions = LaunchOptions()) -> list[str]:
    """``tollway emulate`` standing in for one worker of the pool (no GPU)."""
    model = config.model
    command = [
        "tollway",
        "emulate",
        "--gpu",
        config.gpu,
        "--model",
        model.name,
        "--tp",
        str(model.tp),
        "--weights-dtype",
        model.weights_dtype,
        "--kv-dtype",
        model.kv_dtype,
        "--served-model-name",
        model.upstream_name,
        "--host",
        "0.0.0.0",
        "--port",
        str(SGLANG_PORT),
    ]
    if options.mem_fraction_static is not None:
        command += ["--mem-fraction-static", f"{options.mem_fraction_static:g}"]
    if options.max_total_tokens is not None:
        command += ["--max-total-tokens", str(options.max_total_tokens)]
    if model.embedding:
        command.append("--embedding")
    return command
