from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "authproject.accounts"
    label = "accounts"
