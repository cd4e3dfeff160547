"""The state's side of the exchange: its encounter response XML (:mod:`gateway.state.response`)
and what the gateway does with it (:mod:`gateway.state.process`)."""
