# The scoring worker. ORT_EXTRA=cpu (onnxruntime) or gpu (onnxruntime-gpu):
# the two packages cannot be installed together.
FROM python:3.11-slim
ARG ORT_EXTRA=cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY streams ./streams
COPY export ./export
COPY models ./models
RUN pip install -c constraints.txt ".[${ORT_EXTRA}]" && useradd --system --uid 10001 finsentry \
    && mkdir -p /var/lib/finsentry && chown finsentry /var/lib/finsentry
USER finsentry
EXPOSE 6066
ENTRYPOINT ["finsentry"]
CMD ["worker"]
