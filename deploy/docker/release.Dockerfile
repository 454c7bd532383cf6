# GoReleaser's image (.goreleaser.yaml, dockers): the same image as the
# Dockerfile at the top of the repository, from the binaries GoReleaser
# built (static, CGO_ENABLED=0), which it puts in the build context.
FROM gcr.io/distroless/static-debian12:nonroot
COPY widagent widctl /usr/local/bin/
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
ENTRYPOINT ["widagent"]
CMD ["start"]
