"""The studio page (Gradio): widgets wired to ``StudioSession``; no logic of its own."""

from __future__ import annotations

from ..errors import UsageError
from .render import Voice
from .script import from_rows, parse, to_rows
from .session import StudioSession

EXAMPLE = "[Calm] Welcome to the studio. [Excited] This is the INT4 model speaking!"


def build_app(session: StudioSession):
    """The Gradio Blocks of the studio over ``session``."""
    import gradio as gr

    kind = session.kind
    with gr.Blocks(title="awq-tts studio") as app:
        gr.Markdown(f"# awq-tts studio\n`{session.model_path}` ({kind}) · "
                    f"{session.memory_note or 'INT4 model only'}")
        with gr.Row():
            with gr.Column(scale=3):
                script = gr.Textbox(EXAMPLE, lines=6, label="Script ([Tag] text …)",
                                    elem_id="script")
                cut = gr.Dataframe(headers=["tag", "instruction", "text"], type="array",
                                   label="Segments (edit a cell to adjust one segment; "
                                         "editing the script re-cuts it)",
                                   interactive=True, elem_id="segments")
                notes = gr.Markdown()
            with gr.Column(scale=2):
                ref_audio = gr.Audio(type="filepath", label="Reference clip (Base)",
                                     visible=kind == "base", elem_id="ref-audio")
                ref_text = gr.Textbox(label="Reference text (optional)",
                                      visible=kind == "base")
                speakers = session.speakers()
                speaker = gr.Dropdown(speakers, value=speakers[0] if speakers else None,
                                      label="Speaker", visible=kind == "custom_voice")
                description = gr.Textbox("A clear, natural voice.", label="Identity",
                                         visible=kind == "voice_design")
                seed = gr.Number(0, precision=0, label="Seed")
                pause = gr.Slider(0.0, 2.0, 0.3, step=0.05, label="Pause between segments (s)")
                ab = gr.Checkbox(session.reference_path is not None, label="A/B against bf16",
                                 interactive=session.reference_path is not None)
                blind = gr.Checkbox(False, label="Blind (hide which is which)")
        go = gr.Button("Render", variant="primary", elem_id="render")
        with gr.Row():
            player_a = gr.Audio(label="Take A", elem_id="take-a")
            player_b = gr.Audio(label="Take B", elem_id="take-b")
        figures = gr.Markdown(elem_id="figures")
        reveal = gr.Button("Reveal which take is which")
        revealed = gr.Markdown()
        truth, previewed = gr.State([]), gr.State([])
        files = gr.File(label="Exports (wav + JSON sidecar)", file_count="multiple",
                        elem_id="exports")
        with gr.Accordion("Trust panel", open=True):
            info = session.trust()  # the record is read and hashed once per page
            gr.Markdown(session.trust_markdown(info), elem_id="trust")
            table = session.verdict_table(info)
            if table:
                gr.Dataframe(table, headers=["check", "value", "bound", "result"],
                             label="Last verdict", interactive=False, elem_id="verdict-table")
            figure = session.verdict_figure(info)
            if figure is not None:
                gr.Plot(figure, label="Last verdict: cosine per layer",
                        elem_id="verdict-plot")

        def preview(text):
            parsed = session.preview(text)
            rows = to_rows(parsed)
            return rows, "\n".join(f"- {n}" for n in parsed.notes), rows

        def run(text, table, cut_rows, audio, rtext, spk, desc, seed_value, pause_value, ab_on,
                blind_on, progress=gr.Progress()):  # noqa: B008 (Gradio injects it by default)
            voice = Voice(ref_audio=audio, ref_text=rtext or None, speaker=spk,
                          description=desc)
            progress(0, desc="rendering")

            def step(label: str, i: int, n: int) -> None:
                progress(i / n, desc=f"{label}: segment {i} of {n}")

            # The table renders when it is the cut of the current script (maybe edited);
            # a table left behind by a newer script is stale, and the script renders.
            fresh = cut_rows == to_rows(parse(text)) and table
            chosen = from_rows(table) if fresh else text
            try:
                takes = session.render(chosen, voice, int(seed_value), float(pause_value),
                                       ab=bool(ab_on), on_progress=step)
            except UsageError as exc:  # the user's mistake: one line on the page
                raise gr.Error(str(exc)) from None
            labels = [t.label for t in takes]
            if blind_on:
                takes, labels = session.blind(takes, int(seed_value))
            truth_value = [f"take {chr(65 + i)} is {label}" for i, label in enumerate(labels)]
            if blind_on:
                labels = [f"take {chr(65 + i)}" for i in range(len(takes))]
            audio_out = [(t.render.sample_rate, t.render.wav) for t in takes] + [None]
            lines = [f"**{label}:** {t.summary}" for label, t in zip(labels, takes,
                                                                     strict=True)]
            paths = [str(p) for t in takes for p in (t.wav_path, t.wav_path.with_suffix(".json"))]
            return audio_out[0], audio_out[1], "\n\n".join(lines), paths, truth_value, ""

        script.change(preview, script, [cut, notes, previewed])
        app.load(preview, script, [cut, notes, previewed])
        go.click(run, [script, cut, previewed, ref_audio, ref_text, speaker, description, seed,
                       pause, ab, blind], [player_a, player_b, figures, files, truth, revealed],
                 api_name="render")
        reveal.click(lambda t: "; ".join(t) or "nothing rendered yet", truth, revealed)
    return app
