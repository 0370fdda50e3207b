"""DAG-time checks of what a config points at: model folders, data files, encoders; and warnings.

Everything a cheap read can decide is decided before any job runs, with an error (``ConfigError``)
that names the key, the file and the fix:

* ``models.<name>.path``: a folder with ``config.json`` and weights (``*.safetensors``,
  ``model.safetensors.index.json`` or ``pytorch_model*.bin``);
* every OPD pair with a ``path:`` model (a ``from_experiment`` model counts as the model its
  chain of experiments starts from, ``opd.model_refs.root_model``): the same tokenizer (``tokenizer.json``) and the same
  LM-head size (``config.json`` ``vocab_size``); tiny-world models share the world's tokenizer,
  of ``world.tokenizer.vocab_size`` tokens. A teacher with the student's tokenizer but another
  LM-head size is refused (the message says so and how to resize), not scored over the shared
  part: the trainers compare logits id for id over the whole head;
* ``top_k`` (or ``metrics_k`` when ``top_k`` is 0: ``OPDConfig.stats_k``) of an OPD experiment
  is at most the vocabulary;
* user parquet files (``data.train``, ``data.benchmarks.*``, ``experiments.<exp>.data``,
  ``rollout.source`` when an experiment cold-starts, and ``data.selection.reference`` when an
  experiment selects prompts): the file exists and is parquet, has the columns of the
  verl or MathArena format (``opd.data.datasets.detect_format``), has rows, has a ground truth
  in every row and no repeated problem id; read from the metadata and the ground-truth and id
  columns only;
* ``data.dedup.encoder`` (when dedup is on), ``data.selection.encoder`` and
  ``data.selection.dedup.encoder`` (when prompts are selected, or drawn at random as the
  selection's control): a local sentence-transformers folder, when set.

``config_warnings`` lists what is legal but probably not meant in generation (greedy decoding
with several samples, more rollout prompts than there are), ``training_warnings`` in training
(more prompts per step than an experiment's training set has). No torch, no pandas at import.

    check_models(config); check_data(config)
    for line in config_warnings(config) + training_warnings(config): print(line)
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from opd.errors import ConfigError, DataError
from opd.experiments import train_config
from opd.model_refs import root_model

WEIGHT_FILES = ("*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
                "pytorch_model.bin.index.json")
DATA_HELP = ("expected a parquet file in the verl row format (prompt, reward_model, ...) or the "
             "MathArena format (problem_idx, problem, answer); relative paths are relative to the "
             "working directory")


# ------------------------------------------------------------------------ models


@lru_cache(maxsize=None)
def _hf_config(path: str) -> dict:
    try:
        return json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return {}


@lru_cache(maxsize=None)
def _tokenizer_vocab(path: str):
    """The token-to-id map and added tokens of ``tokenizer.json`` (None when there is none)."""
    tok = Path(path) / "tokenizer.json"
    if not tok.is_file():
        return None
    try:
        data = json.loads(tok.read_text())
    except ValueError as err:
        raise ConfigError(f"{tok}: not valid JSON ({err}); copy the checkpoint's tokenizer.json "
                          "again") from err
    added = sorted((t.get("id"), t.get("content")) for t in data.get("added_tokens") or [])
    return json.dumps([data.get("model", {}).get("vocab"), added], sort_keys=True)


def head_size(path: str) -> int | None:
    """``vocab_size`` of a checkpoint's ``config.json`` (its LM head), or None."""
    cfg = _hf_config(path)
    size = cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")
    return int(size) if isinstance(size, int) else None


def model_vocab(config: dict, model: str) -> tuple[int | None, str]:
    """(vocabulary size, where it was read) of a model of the config (a model from an
    experiment has the vocabulary of the model its chain of experiments starts from)."""
    spec = config["models"][root_model(config, model)]
    if "path" in spec:
        return head_size(spec["path"]), f"vocab_size in {spec['path']}/config.json"
    return config["world"]["tokenizer"]["vocab_size"], "world.tokenizer.vocab_size"


def check_model_folder(name: str, path: str) -> None:
    """``models.<name>.path`` is a Hugging Face folder: config.json (valid JSON) and weights."""
    key, folder = f"models.{name}.path", Path(path)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{key}: no Hugging Face model at {path!r} (config.json not found); point "
                          "it at a local checkpoint folder")
    try:
        json.loads((folder / "config.json").read_text())
    except ValueError as err:
        raise ConfigError(f"{key}: {path}/config.json is not valid JSON ({err}); copy the "
                          "checkpoint's config.json again") from err
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_FILES):
        raise ConfigError(f"{key}: {path} has config.json but no weights (no *.safetensors, "
                          "model.safetensors.index.json or pytorch_model*.bin); copy the "
                          "checkpoint's weight files into that folder, or point the key at the "
                          "folder that has them")


def check_pair(config: dict, exp: str) -> None:
    """The teacher of OPD experiment ``exp`` can score its student's tokens, id for id."""
    spec, models = config["experiments"][exp], config["models"]
    student, teacher = spec["student"], spec.get("teacher")
    if spec["method"] != "opd" or teacher is None:
        return
    paths = {m: models[root_model(config, m)].get("path") for m in (student, teacher)}
    if not any(paths.values()):
        return                                   # both tiny-world models: one world tokenizer
    key = f"experiments.{exp}.teacher"
    what = f"teacher {teacher!r} and student {student!r}"
    fix = ("pick a teacher of the student's tokenizer family (or cold-start a student that has the "
           "teacher's tokenizer)")
    if not all(paths.values()):
        world, path = (student, teacher) if paths[teacher] else (teacher, student)
        (w_size, _), (p_size, where) = model_vocab(config, world), model_vocab(config, path)
        if p_size is not None and p_size != w_size:
            raise ConfigError(
                f"{key}: {what} do not share a vocabulary: {world!r} is a tiny-world model with the "
                f"world's own tokenizer (world.tokenizer.vocab_size {w_size}), {path!r} has "
                f"{where} = {p_size}: the tokenizers differ, so the teacher cannot score the "
                f"student's tokens; {fix}")
        return
    toks = [_tokenizer_vocab(paths[m]) for m in (student, teacher)]
    if None not in toks and toks[0] != toks[1]:
        raise ConfigError(f"{key}: {what} do not share a vocabulary (their tokenizer.json files "
                          "differ), so the teacher cannot score the student's tokens; " + fix)
    sizes = [head_size(paths[m]) for m in (student, teacher)]
    if None not in sizes and sizes[0] != sizes[1]:
        same = "have the same tokenizer but" if None not in toks else "have"
        raise ConfigError(
            f"{key}: {what} {same} LM heads of different sizes (config.json vocab_size "
            f"{sizes[1]} for the teacher, {sizes[0]} for the student); OPD compares the two "
            "models' log-probabilities id for id over the whole head, so this pipeline refuses "
            "such a pair rather than scoring over the shared part. When the extra rows are "
            "padding beyond the tokenizer (as in Qwen2.5 7B vs 1.5B), resize the larger model: "
            f"`model.resize_token_embeddings({min(sizes)})`, then `save_pretrained` into a new "
            "folder, and point the model's path at it")


def check_top_k(config: dict, exp: str) -> None:
    """An OPD experiment's top-k sets fit the vocabulary of its student and teacher."""
    spec = config["experiments"][exp]
    if spec["method"] != "opd" or spec.get("teacher") is None:
        return
    obj = train_config(config, exp).objective
    k = obj.stats_k
    field = "top_k" if k == obj.top_k else "metrics_k"
    overrides = ((spec.get("train") or {}).get("objective") or {})
    key = (f"experiments.{exp}.train.objective.{field}" if field in overrides
           else f"train_defaults.objective.{field}")
    for model in (spec["student"], spec["teacher"]):
        size, where = model_vocab(config, model)
        if size is not None and k > size:
            raise ConfigError(f"{key}: {field} {k} of experiment {exp!r} exceeds the vocabulary of "
                              f"{model!r} ({size} tokens, {where}); a top-k set cannot hold more "
                              f"tokens than the vocabulary has: set {field} <= {size}")


def check_models(config: dict) -> None:
    """Model folders, OPD pairs and top-k sizes (see the module docstring)."""
    for name, spec in config["models"].items():
        if "path" in spec:
            check_model_folder(name, spec["path"])
    for exp in config["experiments"]:
        check_pair(config, exp)
        check_top_k(config, exp)


# ------------------------------------------------------------------------ data


def _column(path: str, column: str) -> list:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=[column]).column(0).to_pylist()


def _empty(value) -> bool:
    return value is None or (isinstance(value, float) and value != value) or not str(value).strip()


def _struct_fields(schema, name: str) -> list[str] | None:
    import pyarrow as pa

    if name not in schema.names or not pa.types.is_struct(schema.field(name).type):
        return None
    return [f.name for f in schema.field(name).type]


def check_parquet(key: str, path: str) -> None:
    """A user dataset file, from its metadata and its ground-truth and id columns."""
    import pyarrow.parquet as pq

    from opd.data.datasets import detect_format, duplicate_ids_message, repeated_ids

    if not Path(path).is_file():
        raise ConfigError(f"{key}: {path}: file not found; {DATA_HELP}")
    try:
        meta = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise ConfigError(f"{key}: {path}: not a readable parquet file ({err}); {DATA_HELP}") from err
    schema = meta.schema_arrow
    try:
        fmt = detect_format(schema.names, path)
    except DataError as err:
        raise ConfigError(f"{key}: {err}") from err
    n = meta.metadata.num_rows
    if n == 0:
        raise ConfigError(f"{key}: {path}: the dataset is empty (0 rows); {DATA_HELP}")
    if fmt == "matharena":
        truth, ids = "answer", "problem_idx"
    else:                                        # the verl row format
        fields = _struct_fields(schema, "reward_model")
        if fields is not None and "ground_truth" not in fields:
            raise ConfigError(f"{key}: {path}: column reward_model has no ground_truth field "
                              f"(fields: {fields}); the verl format stores the answer in "
                              "reward_model.ground_truth")
        truth = "reward_model.ground_truth" if fields else None
        extra = _struct_fields(schema, "extra_info") or []
        ids = next((f"extra_info.{f}" for f in ("problem_id", "index") if f in extra), None)
    if truth:
        empty = [i for i, v in enumerate(_column(path, truth)) if _empty(v)]
        if empty:
            raise ConfigError(f"{key}: {path}: empty ground truth ({truth}) in {len(empty)} of {n} "
                              f"rows, e.g. row(s) {empty[:10]}; fill in the answers or drop those rows")
    if ids and (dups := repeated_ids(_column(path, ids))):
        raise ConfigError(f"{key}: " + duplicate_ids_message(path, ids, dups))


def check_encoder(key: str, path: str | None) -> None:
    if path is None:
        return
    folder = Path(path)
    if not folder.is_dir() or not ((folder / "modules.json").is_file()
                                   or (folder / "config.json").is_file()):
        raise ConfigError(f"{key}: {path}: no local sentence-transformers model there (expected a "
                          "folder with modules.json or config.json); models are never downloaded: "
                          "point it at a local copy, or set it to null for the packaged "
                          "all-MiniLM-L6-v2")


def selects_prompts(config: dict) -> bool:
    return "selection" in config["data"] and any(
        e.get("prompts") in ("selected", "random") for e in config["experiments"].values())


def cold_starts(config: dict) -> bool:
    return any(e.get("cold_start") for e in config["experiments"].values())


def dataset_sources(config: dict) -> list[tuple[str, str]]:
    """(key, parquet path) of every user dataset file a job of this config reads."""
    data = config["data"]
    specs = [("data.train", data["train"])] + [
        (f"data.benchmarks.{b}", s) for b, s in data["benchmarks"].items()] + [
        (f"experiments.{e}.data", s["data"]) for e, s in config["experiments"].items() if s.get("data")]
    if selects_prompts(config):
        specs.append(("data.selection.reference", data["selection"]["reference"]))
    if cold_starts(config) and (config.get("rollout") or {}).get("source"):
        specs.append(("rollout.source", config["rollout"]["source"]))
    return [(f"{k}.source", s["source"]) for k, s in specs if not s["source"].startswith("world:")]


def check_data(config: dict) -> None:
    """User parquet files and encoder folders (see the module docstring)."""
    for key, path in dataset_sources(config):
        check_parquet(key, path)
    dedup = config["data"].get("dedup") or {}
    if dedup.get("enabled", True):
        check_encoder("data.dedup.encoder", dedup.get("encoder"))
    if selects_prompts(config):
        selection = config["data"]["selection"]
        check_encoder("data.selection.encoder", selection.get("encoder"))
        if (selection.get("dedup") or {}).get("enabled", True):
            check_encoder("data.selection.dedup.encoder", (selection.get("dedup") or {}).get("encoder"))


# ------------------------------------------------------------------------ warnings


def dataset_rows(config: dict, spec: dict) -> int | None:
    """Rows of a dataset spec's source before dedup: the world split's size, or the parquet's
    row count (None when it cannot be read)."""
    source = spec["source"]
    if source.startswith("world:"):
        return (config.get("world") or {}).get("problems", {}).get("sizes", {}).get(source[6:])
    try:
        import pyarrow.parquet as pq

        return pq.ParquetFile(source).metadata.num_rows
    except Exception:
        return None


def available_prompts(config: dict) -> int | None:
    """Rows of the cold-start prompt source (``rollout.source``, else ``data.train``) before dedup."""
    return dataset_rows(config, rollout_source(config))


def rollout_source(config: dict) -> dict:
    """The dataset spec the teacher rollout reads: ``rollout.source``, else ``data.train``."""
    return (config.get("rollout") or {}).get("source") or config["data"]["train"]


def config_warnings(config: dict) -> list[str]:
    """Generation settings that are valid but probably not meant, one line each (nothing fails)."""
    out = []
    for section, what in (("eval", "avg@{n} then equals pass@1 and pass@{n} adds nothing"),
                          ("rollout", "the teacher gives each prompt the same response {n} times "
                                      "(and again on every retry after a rejection)")):
        s = config.get(section) or {}
        n = s.get("n", 1)
        if s.get("temperature") == 0 and n > 1:
            out.append(f"{section}.temperature is 0 with {section}.n = {n}: greedy decoding "
                       f"repeats one response, so {what.format(n=n)}; set {section}.n: 1, or a "
                       "temperature > 0")
    prompts = (config.get("rollout") or {}).get("prompts")
    if prompts and cold_starts(config):
        available = available_prompts(config)
        own = bool((config.get("rollout") or {}).get("source"))
        key, what = ("rollout.source", "cold-start") if own else ("data.train", "training")
        if available is not None and prompts > available:
            out.append(f"rollout.prompts = {prompts} exceeds the {available} {what} prompts of {key} "
                       f"({rollout_source(config)['source']}); the teacher rollout "
                       f"is capped at {available} (fewer if dedup removes some)")
    return out


def training_warnings(config: dict) -> list[str]:
    """Experiments whose ``prompts_per_step`` exceeds their training prompts (counted before
    dedup and selection, so an upper bound): the native trainer then walks through shuffled
    passes over the set (``OnPolicyTrainer.next_prompts``), so one step holds each prompt about
    prompts_per_step / n times, each with its own ``n_samples`` responses."""
    out = []
    for exp, spec in config["experiments"].items():
        data = spec.get("data") or config["data"]["train"]
        n, p = dataset_rows(config, data), train_config(config, exp).prompts_per_step
        if n is not None and p > n:
            key = (f"experiments.{exp}.train.prompts_per_step" if "prompts_per_step" in (spec.get("train") or {})
                   else "train_defaults.prompts_per_step")
            out.append(f"{key} = {p} exceeds the {n} training prompts of experiment {exp!r} "
                       f"({data['source']}, before dedup); each step then repeats prompts: the native "
                       f"trainer draws {p} from successive shuffled passes over the set, so a prompt "
                       f"appears about {p / n:.1f} times per step; set it to {n} or fewer so that no "
                       "prompt repeats within a step")
    return out
