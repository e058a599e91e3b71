# The backend image: one statically linked binary in an empty root. Built by
# `just images` from docker/bin/backend (a musl build on the host), so no base
# image is ever pulled.
FROM scratch
COPY backend /backend
EXPOSE 5000
ENTRYPOINT ["/backend"]
