"""parley.human_eval: web app and terminal play for human-vs-agent negotiation studies."""
