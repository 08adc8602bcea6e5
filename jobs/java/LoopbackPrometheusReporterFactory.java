package photoscore.flink;

import io.prometheus.client.CollectorRegistry;
import io.prometheus.client.exporter.HTTPServer;
import java.io.IOException;
import java.lang.reflect.Field;
import java.net.InetSocketAddress;
import java.util.Properties;
import org.apache.flink.metrics.prometheus.AbstractPrometheusReporter;
import org.apache.flink.metrics.reporter.MetricReporter;
import org.apache.flink.metrics.reporter.MetricReporterFactory;

/**
 * Flink's Prometheus reporter, serving on one host:port (default 127.0.0.1).
 *
 * <p>Flink 2.3's PrometheusReporter binds its HTTP server to every interface (new
 * InetSocketAddress(port)) and has no host option; every photoscore server binds 127.0.0.1. This
 * reporter keeps Flink's metric-to-Prometheus translation (AbstractPrometheusReporter) and serves
 * the same registry from a server bound to `host`. Options: metrics.reporter.NAME.host, .port.
 */
public class LoopbackPrometheusReporterFactory implements MetricReporterFactory {

    @Override
    public MetricReporter createMetricReporter(Properties properties) {
        String host = properties.getProperty("host", "127.0.0.1");
        int port = Integer.parseInt(properties.getProperty("port", "9249").trim());
        return new Reporter(host, port);
    }

    static final class Reporter extends AbstractPrometheusReporter {
        private final HTTPServer server;

        Reporter(String host, int port) {
            try {
                server = new HTTPServer(new InetSocketAddress(host, port), collectorRegistry());
            } catch (IOException e) {
                throw new RuntimeException("could not serve Prometheus metrics on " + host + ":" + port, e);
            }
            log.info("Serving Prometheus metrics on http://{}:{}/metrics", host, server.getPort());
        }

        /** The registry AbstractPrometheusReporter fills; package-private there, hence reflection. */
        private CollectorRegistry collectorRegistry() {
            try {
                Field field = AbstractPrometheusReporter.class.getDeclaredField("registry");
                field.setAccessible(true);
                return (CollectorRegistry) field.get(this);
            } catch (ReflectiveOperationException e) {
                throw new IllegalStateException("this Flink's AbstractPrometheusReporter has no registry field", e);
            }
        }

        @Override
        public void close() {
            server.stop();
            super.close();
        }
    }
}
