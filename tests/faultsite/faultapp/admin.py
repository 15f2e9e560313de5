"""A second admin site whose ModelAdmins log changes the ways Django allows
beside the three views the publisher used to wrap."""

from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.http import HttpResponse
from django.urls import path
from tickets.models import Notice, Ticket

site2 = admin.AdminSite(name="admin2")


class ApproveMixin:
    """A custom view (get_urls and admin_site.admin_view, as Django documents)
    that saves and calls log_change(): not changeform_view, delete_view or
    changelist_view."""

    field = ""

    def get_urls(self):
        return [
            path(
                "<int:pk>/approve/",
                self.admin_site.admin_view(self.approve),
                name=f"{self.opts.model_name}_approve",
            ),
            *super().get_urls(),
        ]

    def approve(self, request, pk):
        obj = self.model.objects.get(pk=pk)
        setattr(obj, self.field, getattr(obj, self.field) + " (approved)")
        obj.save()
        self.log_change(request, obj, "Approved.")
        return HttpResponse("ok")


class NoticeAdmin(ApproveMixin, admin.ModelAdmin):
    field = "text"
    actions = ["mark_reviewed"]

    def log_deletion(self, request, obj, object_repr):
        """Overridden, as Django 5.2 still supports (deprecated): Django then
        logs with LogEntry.objects.log_action(), not log_actions()."""
        return super().log_deletion(request, obj, object_repr)

    @admin.action(description="Mark reviewed")
    def mark_reviewed(self, request, queryset):
        """Saves and logs with LogEntry.objects.create()."""
        for obj in queryset:
            obj.text += " (reviewed)"
            obj.save()
            LogEntry.objects.create(
                user_id=request.user.pk,
                content_type_id=ContentType.objects.get_for_model(obj).pk,
                object_id=str(obj.pk),
                object_repr=str(obj),
                action_flag=CHANGE,
                change_message="Reviewed.",
            )


class TicketAdmin(ApproveMixin, admin.ModelAdmin):
    field = "title"


class TicketInline(admin.TabularInline):
    model = Ticket
    fk_name = "team"
    fields = ["title"]
    extra = 0


class GroupAdmin(admin.ModelAdmin):
    """Groups with their tickets as an inline."""

    inlines = [TicketInline]
    fields = ["name"]


site2.register(Notice, NoticeAdmin)
site2.register(Ticket, TicketAdmin)
site2.register(Group, GroupAdmin)
