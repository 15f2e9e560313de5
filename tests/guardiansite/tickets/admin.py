from django.contrib import admin

from .models import Notice, Ticket


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    list_display = ["id", "title"]
    list_editable = ["title"]


@admin.register(Notice)
class NoticeAdmin(admin.ModelAdmin):
    list_display = ["id", "text"]
    list_editable = ["text"]
