"""The `prasso` command: thin Typer commands over the shared services."""

from __future__ import annotations

from prasso_messaging.cli.admin import admin_app
from prasso_messaging.cli.app import app
from prasso_messaging.cli.config_show import config_app
from prasso_messaging.cli.deliveries import register as register_deliveries
from prasso_messaging.cli.doctor import register as register_doctor
from prasso_messaging.cli.guests import guests_app
from prasso_messaging.cli.mail import mail_app
from prasso_messaging.cli.messages import register as register_messages
from prasso_messaging.cli.prune import register as register_prune
from prasso_messaging.cli.push import push_app
from prasso_messaging.cli.queue import queue_app
from prasso_messaging.cli.queue_restart import register as register_queue_restart
from prasso_messaging.cli.server import db_app
from prasso_messaging.cli.server import register as register_server
from prasso_messaging.cli.teams import teams_app, tokens_app

app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(guests_app, name="guests")
app.add_typer(teams_app, name="teams")
app.add_typer(tokens_app, name="tokens")
register_queue_restart(queue_app)
app.add_typer(queue_app, name="queue")
app.add_typer(push_app, name="push")
app.add_typer(config_app, name="config")
app.add_typer(mail_app, name="mail")
register_server(app)
register_messages(app)
register_deliveries(app)
register_prune(app)
register_doctor(app)


def main() -> None:
    app()
