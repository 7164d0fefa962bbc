from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import include, path

urlpatterns: list[Any] = []

if settings.TOOL == "drf":
    from rest_framework import routers, serializers, viewsets
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from flowtrace.demo.models import Item

    class ItemSerializer(serializers.ModelSerializer):
        class Meta:
            model = Item
            fields = ["id", "name", "price"]

    class ItemViewSet(viewsets.ModelViewSet):
        queryset = Item.objects.all()
        serializer_class = ItemSerializer

    class Ping(APIView):
        def get(self, request: Any) -> Response:
            return Response({"ping": "pong"})

    router = routers.DefaultRouter()
    router.register(r"items", ItemViewSet)
    urlpatterns += [path("api/", include(router.urls)), path("api/ping", Ping.as_view())]

if settings.TOOL == "toolbar":
    from debug_toolbar.toolbar import debug_toolbar_urls

    urlpatterns += debug_toolbar_urls()

urlpatterns += [path("", include("tests.testproject.urls"))]
