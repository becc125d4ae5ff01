from copyledger.cli.main import app

app()
