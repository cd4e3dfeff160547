"""The state's side of the exchange, as format code: its encounter response XML
(:mod:`gateway.state.response`). What the gateway does with one — history updates, summaries
to plan and provider — is pipeline work, in :mod:`gateway.pipeline.steps.state_response`."""
