package photoscore.flink;

import java.io.IOException;
import java.util.Base64;
import java.util.regex.Pattern;
import org.apache.flink.api.common.functions.FilterFunction;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;

public class RecordWithMetadata implements KafkaRecordDeserializationSchema<Row> {
    private static final long serialVersionUID = 2L;
    private static final JsonFactory JSON = new JsonFactory();
    private static final Pattern SHA256 = Pattern.compile("[0-9a-f]{64}");

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<Row> out) {
        byte[] value = record.value();
        String line = record.topic() + "\t" + record.partition() + "\t" + record.offset() + "\t"
                + (value == null ? "-" : "+" + Base64.getEncoder().encodeToString(value));
        out.collect(Row.of(claimedSha256(value), line));
    }

    /** The top-level "content_sha256" of a JSON object message when it is 64 lowercase hex digits, else "". */
    static String claimedSha256(byte[] value) {
        if (value == null) {
            return "";
        }
        try (JsonParser parser = JSON.createParser(value)) {
            if (parser.nextToken() != JsonToken.START_OBJECT) {
                return "";
            }
            while (parser.nextToken() == JsonToken.FIELD_NAME) {
                String name = parser.getCurrentName();
                JsonToken token = parser.nextToken();
                if ("content_sha256".equals(name)) {
                    String claim = token == JsonToken.VALUE_STRING ? parser.getText() : "";
                    return SHA256.matcher(claim).matches() ? claim : "";
                }
                parser.skipChildren();
            }
        } catch (IOException | RuntimeException e) {
            // Not JSON: the Python side dead-letters it with the parse error.
        }
        return "";
    }

    @Override
    public TypeInformation<Row> getProducedType() {
        return Types.ROW(Types.STRING, Types.STRING);
    }

    /** Records whose message claims its content_sha256. */
    public static class Claimed implements FilterFunction<Row> {
        private static final long serialVersionUID = 1L;

        @Override
        public boolean filter(Row row) {
            return !((String) row.getField(0)).isEmpty();
        }
    }

    /** Records that must be read and hashed before they can be keyed. */
    public static class Unclaimed extends Claimed {
        private static final long serialVersionUID = 1L;

        @Override
        public boolean filter(Row row) {
            return !super.filter(row);
        }
    }
}
