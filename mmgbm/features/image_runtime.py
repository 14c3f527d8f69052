"""What runs the image encoder: the runtime (TensorFlow or OpenVINO) and the precision it computes in, and what the
`auto` settings pick.

`auto` continues a store the way its features were made, so an upgrade or a machine without OpenVINO reads and
extends it as it is; for a new store it picks the fastest this machine offers: OpenVINO when it is installed, in
bfloat16 where the CPU computes bfloat16 natively (OpenVINO says so). TensorFlow stays in float32: its bfloat16
(Keras mixed precision) was slower than its float32 on such a CPU. Importing this module imports neither runtime;
asking the CPU imports OpenVINO once.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any, NamedTuple

RUNTIMES = ("tensorflow", "openvino")
PRECISIONS = ("float32", "bfloat16")
# What a store made before these settings existed was made with: its fingerprint names neither.
LEGACY = {"runtime": "tensorflow", "precision": "float32"}
NAMES = {"tensorflow": "TensorFlow", "openvino": "OpenVINO"}


class EncoderChoice(NamedTuple):
    runtime: str
    precision: str
    why: str = ""  # what decided it, where a setting was `auto`

    def describe(self) -> str:
        return f"{NAMES[self.runtime]} {self.precision}" + (f" ({self.why})" if self.why else "")

    def fingerprint(self) -> dict[str, str]:
        """The store fingerprint's entries: only what differs from LEGACY, so stores made before stay valid."""
        return {key: value for key, value in self._asdict().items() if key in LEGACY and value != LEGACY[key]}


def choose(runtime: str, precision: str, stored: dict[str, Any] | None = None) -> EncoderChoice:
    """The concrete runtime and precision for these settings; `stored` is the fingerprint of the store's features,
    which `auto` settings follow where there are any."""
    if stored is not None and "auto" in (runtime, precision):
        made = {key: stored.get(key, value) for key, value in LEGACY.items()}
        return EncoderChoice(
            made["runtime"] if runtime == "auto" else runtime,
            made["precision"] if precision == "auto" else precision,
            "auto: as the store was made",
        )
    why = []
    if runtime == "auto":
        runtime = "openvino" if openvino_installed() else "tensorflow"
        why.append("OpenVINO is installed" if runtime == "openvino" else "OpenVINO is not installed")
    if precision == "auto":
        precision = "bfloat16" if runtime == "openvino" and native_bfloat16() else "float32"
        why.append(
            {
                ("openvino", "bfloat16"): "this CPU computes bfloat16 natively",
                ("openvino", "float32"): "this CPU has no native bfloat16",
            }.get((runtime, precision), "TensorFlow runs fastest in float32")
        )
    return EncoderChoice(runtime, precision, f"auto: {', '.join(why)}" if why else "")


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


@functools.cache
def native_bfloat16() -> bool:
    """Whether OpenVINO computes bfloat16 natively on this CPU (AVX512-BF16 or AMX): its own capability list."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
