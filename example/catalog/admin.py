from django.contrib import admin

from .models import Article, Product, Supplier

admin.site.register(Article, list_display=["title", "published"])
admin.site.register(Product, list_display=["name", "price"])
admin.site.register(Supplier, list_display=["name", "email"])
