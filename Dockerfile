FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git openssh-client && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY scripthut_site scripthut_site
COPY runs runs
COPY backends backends
COPY sources sources
COPY templates templates
COPY manage.py ./
# python-ldap (LDAP sign-in) compiles against the OpenLDAP and SASL headers.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev libldap-dev libsasl2-dev \
    && pip install --no-cache-dir . && rm -rf /var/lib/apt/lists/*
ENV SCRIPTHUT_DATA_DIR=/data SCRIPTHUT_CONFIG=/app/scripthut.yaml
EXPOSE 8000
CMD ["scripthut", "serve", "--host", "0.0.0.0", "--port", "8000"]
