"""The evaluation report: `report.md` (images as files) and a self-contained `report.html`
(images and audio inlined as base64), built from one list of blocks so both say the same."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np

from .compare import COMPARED_FEATURES, feature_values
from .features import NOTE_LENGTH_CLASSES, SCALAR_FEATURES
from .sanity import PROFILE_SOURCES, REASONS
from .two_sample import MIN_PIECES

__all__ = ["write_report", "feature_histograms"]

SET_LABELS = {"generated": "fine-tuned", "model_alone": "fine-tuned, model alone", "untrained": "untrained",
              "shuffled": "shuffled bars", "reference": "reference"}
SET_COLOURS = {"reference": "0.35", "generated": "tab:blue", "model_alone": "tab:purple", "untrained": "tab:orange",
               "shuffled": "tab:green"}
# The listener table names the reference by what it is, and the shuffled set as the control.
_LISTENER_LABELS = {"reference": "held-out pieces (half against half)", "shuffled": "shuffled bars (control)"}
AUDIO_SAMPLE_RATE = 16000  # enough for a preview, and a third of the bytes of 44.1 kHz


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def feature_histograms(per_set: dict[str, list[dict]], path: Path) -> Path:
    """One panel per scalar feature: the distribution of each set (density histograms)."""
    columns = 4
    rows = math.ceil(len(SCALAR_FEATURES) / columns)
    figure = _figure(4 * columns, 2.8 * rows)
    for position, name in enumerate(SCALAR_FEATURES):
        ax = figure.add_subplot(rows, columns, position + 1)
        values = {label: feature_values(features, name) for label, features in per_set.items()}
        present = [v for v in values.values() if v.size]
        if not present:
            ax.set_title(f"{name} (undefined)", fontsize=9)
            continue
        low = min(float(v.min()) for v in present)
        high = max(float(v.max()) for v in present)
        bins = np.linspace(low, high if high > low else low + 1, 21)
        for label, data in values.items():
            if data.size:
                # The reference filled, the others as outlines on top, so none hides another.
                style = dict(histtype="stepfilled", alpha=0.3) if label == "reference" else dict(histtype="step", linewidth=1.6)
                ax.hist(data, bins=bins, density=True, color=SET_COLOURS.get(label),
                        label=SET_LABELS.get(label, label), **style)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    figure.axes[0].legend(fontsize=7)
    figure.savefig(str(path), format="png")
    return path


def note_length_chart(per_set: dict[str, list[dict]], path: Path) -> Path:
    """Mean note-length histogram of each set, side by side."""
    figure = _figure(10, 3.2)
    ax = figure.add_subplot()
    labels = [name for name, _ in NOTE_LENGTH_CLASSES]
    width = 0.8 / max(len(per_set), 1)
    for index, (label, features) in enumerate(per_set.items()):
        values = feature_values(features, "note_length_histogram")
        if values.size:
            ax.bar(np.arange(len(labels)) + index * width, values.mean(axis=0), width,
                   color=SET_COLOURS.get(label), label=SET_LABELS.get(label, label))
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("share of notes")
    ax.legend(fontsize=7)
    figure.savefig(str(path), format="png")
    return path


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _share(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.0f}%"


def _listener_blocks(metrics: dict) -> list[tuple]:
    """The lead: what separates a model from its corpus, for every set beside the held-out pieces."""
    sets, reference = metrics["sets"], metrics["reference"]
    text = ("Chords on the beat: the share of beats where the notes sounding at the beat's onset (all parts) "
            "form a triad or a seventh chord (any inversion, the seventh with or without its fifth). Parallels "
            "per move: parallel perfect fifths and octaves among the moves where two parts both change pitch. "
            "Rests inside voices: the share of a part's notes followed by a rest before the part's next note. "
            "Each is pooled over the set's pieces. Classifier accuracy: a logistic regression on these three "
            "and the scalar features below, cross-validated, telling the set's pieces from the held-out ones: "
            "0.5 means it cannot tell them apart, 1.0 that every piece gives itself away; the held-out pieces "
            f"score one half against the other. It is left out (–) for a set of fewer than {MIN_PIECES} pieces; "
            "on a few dozen pieces it wanders by about 0.1 around 0.5 by chance alone. The sane share (next "
            "section) is the floor a set must pass first.")
    header = ["set", "pieces", "chords on the beat", "parallels per move", "rests inside voices",
              "classifier accuracy vs held-out", "sane share"]
    # The model's sets, then the corpus itself, then the control that keeps its bars but not their order.
    order = [(name, entry) for name, entry in sets.items() if name != "shuffled"] + [("reference", reference)] \
        + [(name, entry) for name, entry in sets.items() if name == "shuffled"]
    rows = [[_LISTENER_LABELS.get(name, SET_LABELS.get(name, name)), str(entry["pieces"]),
             _share(entry["chord_on_beat"]), _number(entry["parallels_per_move"], 3),
             _number(entry["rests_inside_voices"], 3), _number(entry["classifier_accuracy"], 2),
             _share(entry["sanity"]["sane_share"])]
            for name, entry in order]
    return [("h2", "What a listener hears"), ("p", text), ("table", header, rows)]


def _role_limits(limits: dict | None) -> str:
    """A profile's per-role limits as "(Bass 8.00, Drums 2.50)"; nothing for a profile without them."""
    if not limits:
        return ""
    shown = [f"{role} " + ("-".join(_number(value, 2) for value in limit) if isinstance(limit, list)
                           else _number(limit, 2)) for role, limit in limits.items()]
    return "(" + ", ".join(shown) + ")"


def _sanity_blocks(metrics: dict) -> list[tuple]:
    """The floor: which samples a listener of the corpus would accept, and why not the others."""
    sets, reference, sanity = metrics["sets"], metrics["reference"], metrics["sanity"]
    facts = sanity["profile"]
    source = sanity["profile_source"]
    ending = ("A sample cut by the token budget (no `</music>`) counts as not sane."
              if sanity.get("require_ending") else
              "Whether a sample ended by itself (`</music>`) or was cut by the token budget is shown beside "
              "its sanity, not counted in it.")
    text = (f"A sample is sane when a listener of the corpus would accept it: it has notes and time moves, "
            f"no onset has more than {facts['max_notes_per_onset']} notes (all instruments together; the most the "
            f"corpus's excerpts have), no note "
            f"is struck twice, time never stands still longer than {_number(facts['max_gap_beats'], 2)} beats "
            f"(from the start too), it plays only the corpus's programs {facts['programs']}, at most "
            f"{facts['max_programs_per_piece']} of them, each within its pitch range; every part its caption asks "
            f"for plays, on the instrument asked, no part is silent longer than the corpus's parts of its role "
            f"{_role_limits(facts.get('role_rest_beats'))}, and each part's notes per beat stay in its role's "
            f"range {_role_limits(facts.get('role_notes_per_beat'))}. Judged against "
            f"{PROFILE_SOURCES.get(source, source)}. {ending} The fine-tuned samples are drawn with the "
            f"sampler's corpus constraints; \"model alone\" samples with the syntax grammar and what was asked "
            f"(the caption's instruments, part by part), none of the corpus's limits. The reference "
            f"row judges the held-out pieces the same way: a check of the measure itself.")
    blocks: list[tuple] = [("h2", "Sane samples"), ("p", text)]
    header = ["set", "samples", "sane share", "ended by itself", "mean notes per onset", "most notes at one onset",
              "duplicate notes", "mean bars", "masked mass", "bits/note", "instruments as asked",
              "drums where asked", "parts silent too long"]
    rows = []
    for name, entry in list(sets.items()) + [("reference", reference)]:
        summary = entry["sanity"]
        likelihood = metrics["likelihood"].get(name, {})
        rows.append([SET_LABELS.get(name, name), str(summary["samples"]), _share(summary["sane_share"]),
                     _share(summary["ended_share"]), _number(summary["mean_notes_per_onset"], 2),
                     str(summary["max_notes_per_onset"]), str(summary["duplicate_notes"]),
                     _number(summary["mean_bars"], 1), _number(summary.get("mean_masked_mass"), 3),
                     _number(likelihood.get("bits_per_note"), 2), _share(summary.get("instruments_as_asked_share")),
                     _share(summary.get("drums_when_asked_share")), str(summary.get("silent_parts", "–"))])
    rows.append(["corpus profile", str(facts["pieces"]), "–", "–", _number(facts["mean_notes_per_onset"], 2),
                 str(facts["max_notes_per_onset"]), "–", "–", "–", "–", "–", "–", "–"])
    blocks.append(("table", header, rows))

    columns = list(sets.items()) + [("reference", reference)]
    reason_rows = [[f"{reason}: {description}"] + [str(entry["sanity"]["reasons"].get(reason, 0))
                                                    for _, entry in columns]
                   for reason, description in REASONS.items()
                   if any(entry["sanity"]["reasons"].get(reason) for _, entry in columns)]
    if reason_rows:
        blocks += [("h3", "Why samples are not sane (samples failing each check)"),
                   ("table", ["check"] + [SET_LABELS.get(name, name) for name, _ in columns], reason_rows)]
    for name in ("generated", "model_alone"):
        if name not in sets:
            continue
        names = sets[name].get("names") or []
        per_piece = sets[name]["sanity"]["per_piece"]
        rows = [[names[index] if index < len(names) else str(index), "yes" if check["sane"] else "no",
                 ", ".join(check["reasons"]) or "–", str(check["notes"]), str(check["bars"]), str(check["onsets"]),
                 str(check["max_notes_per_onset"]), str(check["duplicate_notes"]),
                 _number(check["longest_gap_beats"], 2),
                 "–" if check["ended"] is None else ("yes" if check["ended"] else "no"),
                 _number(check.get("masked_mass"), 3)]
                for index, check in enumerate(per_piece)]
        blocks += [("h3", f"Each sample: {SET_LABELS.get(name, name)}"),
                   ("table", ["sample", "sane", "why not", "notes", "bars", "onsets", "most notes at one onset",
                              "duplicate notes", "longest gap (beats)", "ended", "masked mass"], rows)]
    return blocks


def _reference_described(reference: dict) -> str:
    cut = reference.get("excerpts")
    if not cut:
        return f"{reference['pieces']} held-out pieces"
    return (f"{cut['excerpts']} excerpts of {cut['bars']} bars (the samples' median length) from "
            f"{cut['pieces']} held-out pieces")


def _blocks(metrics: dict, images: dict, sample_media: list[dict]) -> list[tuple]:
    sets = metrics["sets"]
    reference = metrics["reference"]
    blocks: list[tuple] = [("h1", f"Evaluation of {metrics.get('model') or metrics['settings'].get('samples')}"),
                           ("p", f"Data: {metrics['data']}; reference: {_reference_described(reference)} "
                                 f"(test + validation). Features follow MusPy; set comparison follows MGEval "
                                 f"(overlapped area OA, higher is better, and KL divergence, lower is better, "
                                 f"between the reference intra-set and the set-to-reference distance curves).")]
    blocks += _listener_blocks(metrics)
    blocks += _sanity_blocks(metrics)
    header = ["set", "sane share", "valid share", "mean OA", "mean KL", "longest copy (bars, max)", "share copying > 4 bars",
              "loss", "perplexity", "bits/note"]
    rows = []
    for name, entry in sets.items():
        validity = metrics["validity"].get(name, {})
        likelihood = metrics["likelihood"].get(name, {})
        memo = entry["memorization"]
        rows.append([SET_LABELS.get(name, name), _share(entry["sanity"]["sane_share"]),
                     _number(validity.get("valid_share")), _number(entry["mean_oa"]),
                     _number(entry["mean_kl"]), _number(memo.get("longest_bars_max"), 1),
                     _number(memo.get("share_copying")), _number(likelihood.get("loss")),
                     _number(likelihood.get("perplexity"), 2), _number(likelihood.get("bits_per_note"), 2)])
    memo = reference["memorization"]
    rows.append(["reference (split-half ceiling)", _share(reference["sanity"]["sane_share"]), "–",
                 _number(reference["ceiling_mean_oa"]),
                 _number(reference["ceiling_mean_kl"]), _number(memo.get("longest_bars_max"), 1),
                 _number(memo.get("share_copying")), "–", "–", "–"])
    blocks += [("h2", "Summary"), ("table", header, rows)]

    header = ["feature", "reference mean (std)"] + [f"{SET_LABELS.get(n, n)} mean (std)" for n in sets] \
        + [f"OA {SET_LABELS.get(n, n)}" for n in sets] + ["OA ceiling"]
    rows = []
    for feature in COMPARED_FEATURES:
        row = [feature]
        if feature == "note_length_histogram":
            row += [f"(histogram){'; ' + str(summary[feature]['nan']) + ' NaN' if summary[feature].get('nan') else ''}"
                    for summary in [reference["features"]] + [entry["features"] for entry in sets.values()]]
        else:
            for summary in [reference["features"]] + [entry["features"] for entry in sets.values()]:
                stats = summary[feature]
                undefined = f"; {stats['nan']} NaN" if stats.get("nan") else ""
                row.append(f"{_number(stats['mean'])} ({_number(stats['std'])}){undefined}")
        row += [_number(entry["comparison"][feature]["oa"]) for entry in sets.values()]
        row.append(_number(reference["ceiling"][feature]["oa"]))
        rows.append(row)
    blocks += [("h2", "Features and overlapped area"),
               ("p", "\"k NaN\": pieces where the feature is undefined (no pitched notes, one onset, shorter "
                     "than two bars); they are left out of that feature's mean and comparison, so a set with "
                     "many of them is judged on its few other pieces."),
               ("table", header, rows),
               ("img", images["features"], "feature distributions"),
               ("img", images["note_lengths"], "note-length histograms")]

    validity_rows = []
    for name, validity in metrics["validity"].items():
        errors = validity.get("token_errors", {})
        validity_rows.append([SET_LABELS.get(name, name), str(validity["samples"]), str(validity["decoded"]),
                              str(validity["with_notes"]), str(errors.get("type", "–")),
                              str(errors.get("time", "–")), str(errors.get("duplicate_note", "–")),
                              _number(validity.get("token_error_rate"), 4)])
    blocks += [("h2", "Validity"),
               ("table", ["set", "samples", "decoded", "with notes", "type errors", "time errors",
                          "duplicate notes", "error rate"], validity_rows)]

    likelihood_rows = [[SET_LABELS.get(name, name), entry["split"], str(entry["tokens"]), _number(entry["notes"], 0),
                        _number(entry["loss"]), _number(entry["perplexity"], 2), _number(entry["bits_per_note"], 2)]
                       for name, entry in metrics["likelihood"].items()]
    if likelihood_rows:
        blocks += [("h2", "Held-out likelihood"),
                   ("table", ["model", "split", "tokens", "notes", "loss (nats/token)", "perplexity", "bits per note"],
                    likelihood_rows)]

    generated = sets["generated"]
    memo_rows = [[name, str(copy["notes"]), _number(copy["bars"], 2), copy["source"] or "–"]
                 for name, copy in zip(generated.get("names", []), generated["memorization"]["per_piece"])]
    blocks += [("h2", "Memorisation"),
               ("p", "Longest stretch of each sample found verbatim (transposition-invariant: pitch intervals "
                     "and onset deltas of all pitched notes) in one training piece."),
               ("table", ["sample", "notes", "bars", "training piece"], memo_rows)]

    if sample_media:
        blocks.append(("h2", "Samples"))
        for media in sample_media:
            blocks.append(("h3", media["name"] + (f" ({media['verdict']})" if media.get("verdict") else "")))
            if media.get("png"):
                blocks.append(("img", media["png"], f"piano roll of {media['name']}"))
            if media.get("wav"):
                blocks.append(("audio", media["wav"]))
            elif media.get("wav_error"):
                blocks.append(("p", f"(no audio: {media['wav_error']})"))
    return blocks


def _markdown(blocks: list[tuple], out: Path) -> str:
    lines = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "table":
            header, rows = block[1], block[2]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{block[2]}]({Path(block[1]).relative_to(out).as_posix()})", ""]
        elif kind == "audio":
            lines += [f"[audio: {Path(block[1]).name}]({Path(block[1]).relative_to(out).as_posix()})", ""]
    return "\n".join(lines)


def _html(blocks: list[tuple]) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>midillm evaluation</title><style>"
             "body{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}</style></head><body>"]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3", "p"):
            parts.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "table":
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in block[1]) + "</tr>")
            for row in block[2]:
                parts.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>")
            parts.append("</table>")
        elif kind == "img":
            data = base64.b64encode(Path(block[1]).read_bytes()).decode()
            parts.append(f"<p><img alt='{html.escape(block[2])}' src='data:image/png;base64,{data}'></p>")
        elif kind == "audio":
            data = base64.b64encode(Path(block[1]).read_bytes()).decode()
            parts.append(f"<p><audio controls src='data:audio/wav;base64,{data}'></audio></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(metrics: dict, sets: dict, reference: list, out: Path, report_samples: int = 3) -> dict[str, Path]:
    """Figures, sample MIDI / piano rolls / audio, report.md and report.html under `out`."""
    from midillm.decoding.export import ExportError, write_midi, write_png, write_wav

    out = Path(out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    per_set = {"reference": metrics["reference"]["per_piece"]}
    per_set.update({name: entry["per_piece"] for name, entry in metrics["sets"].items()})
    images = {"features": feature_histograms(per_set, figures / "features.png"),
              "note_lengths": note_length_chart(per_set, figures / "note_lengths.png")}

    samples_dir = out / "samples"
    media = []
    generated_names = metrics["sets"]["generated"].get("names") or []
    for index, score in enumerate(sets.get("generated", [])):
        name = Path(generated_names[index]).stem if index < len(generated_names) else f"sample-{index:03d}"
        if not metrics["settings"].get("samples"):
            write_midi(score, samples_dir / f"{name}.mid")
        if index >= report_samples:
            continue
        entry = {"name": name, "png": write_png(score, samples_dir / f"{name}.png", width=1000, height=300)}
        checks = metrics["sets"]["generated"].get("sanity", {}).get("per_piece") or []
        if index < len(checks):
            entry["verdict"] = "sane" if checks[index]["sane"] else "not sane: " + ", ".join(checks[index]["reasons"])
        try:
            entry["wav"] = write_wav(score, samples_dir / f"{name}.wav", sample_rate=AUDIO_SAMPLE_RATE)
        except ExportError as error:  # no synthesizer or SoundFont here: the report says so
            entry["wav_error"] = str(error)
        media.append(entry)
    # The model alone's samples too: its sane share means little unless its music can be heard
    # and looked at beside the constrained samples'.
    if not metrics["settings"].get("samples"):
        alone_names = metrics["sets"].get("model_alone", {}).get("names") or []
        for index, score in enumerate(sets.get("model_alone", [])):
            name = alone_names[index] if index < len(alone_names) else f"model-alone-{index:03d}"
            write_midi(score, samples_dir / f"{name}.mid")

    blocks = _blocks(metrics, images, media)
    (out / "report.md").write_text(_markdown(blocks, out))
    (out / "report.html").write_text(_html(blocks))
    written = {"markdown": out / "report.md", "html": out / "report.html", **images}
    for entry in media:
        written[f"{entry['name']}.png"] = entry["png"]
        if entry.get("wav"):
            written[f"{entry['name']}.wav"] = entry["wav"]
    return written
