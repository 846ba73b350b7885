"""The admin web pages (`/admin`): server-rendered Jinja2 and HTMX, assets vendored as files.

`site.py` assembles the pages; this package imports nothing itself, so `prasso admin
create-user` can use `accounts.py` without loading the web stack.
"""
