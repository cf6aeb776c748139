# The ZeroPay server image the compose files in deploy/compose build. Configuration comes from
# the environment (README, "Running it for real"); keys from an env file never in the image.
FROM python:3.11-slim
WORKDIR /srv/zeropay
COPY pyproject.toml README.md ./
COPY zeropay_proto zeropay_proto
COPY adapters adapters
COPY zeropay_server zeropay_server
RUN pip install --no-cache-dir . && useradd --system zeropay
USER zeropay
EXPOSE 8080
ENV ZEROPAY_BIND=0.0.0.0:8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health/ready').status != 200)"
CMD ["zeropay-server"]
