import click


@click.group()
def main():
    """forgelab: a mail-forgery lab."""
