# The balancer image: one statically linked binary in an empty root. Built by
# `just images` from docker/bin/balancer (a musl build on the host), so no base
# image is ever pulled.
FROM scratch
COPY balancer /balancer
EXPOSE 5000
ENTRYPOINT ["/balancer"]
