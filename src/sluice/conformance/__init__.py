"""`sluice conformance`: check a running deployment, and one model behind it, with the official `openai` SDK.

`runner` holds the command (options, the table, the exit status) and imports nothing beyond the
standard library until it runs; `scenarios` holds the checks and needs the `openai` SDK and
pydantic, which the gateway itself never imports: they come with `pip install 'sluice[conformance]'`.
"""
