# The loadgen image: one statically linked binary in an empty root. Built by
# `just images` from docker/bin/loadgen (a musl build on the host), so no base
# image is ever pulled.
FROM scratch
COPY loadgen /loadgen
ENTRYPOINT ["/loadgen"]
