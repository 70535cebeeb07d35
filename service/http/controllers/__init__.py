"""One controller module per resource, each a module-level Litestar ``Controller`` that declares the
components it uses as ``Provide`` dependencies (see :mod:`neurflow.service.http.deps`)."""
