"""The web studio (`studio ui`): a Gradio front end driving `studio.run.run` in-process.

Modules: form (form values -> RunConfig), view (events -> what the page shows; pure), jobs (one run at a
time per device, queue positions, cancel), history (run folders -> rows, downloads), app (the Blocks
layout), server (launch). Importing this package imports neither gradio nor torch.
"""
