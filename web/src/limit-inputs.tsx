// The limit inputs shared by the approve form, the key create form and a key's inline edit.
import type { LimitFields } from "./limits";

interface Props {
  value: LimitFields;
  onChange: (next: LimitFields) => void;
  withExpires: boolean;
  disabled?: boolean;
}

const numeric: { field: "rpm" | "tpm" | "concurrency"; label: string; title: string }[] = [
  { field: "rpm", label: "RPM", title: "Requests per minute (empty: unlimited)" },
  { field: "tpm", label: "TPM", title: "Tokens per minute (empty: unlimited)" },
  { field: "concurrency", label: "Concurrency", title: "Requests at the same time (empty: unlimited)" },
];

export function LimitInputs({ value, onChange, withExpires, disabled }: Props) {
  const set = (field: keyof LimitFields) => (e: Event) =>
    onChange({ ...value, [field]: (e.currentTarget as HTMLInputElement).value });
  return (
    <div class="limits">
      {numeric.map(({ field, label, title }) => (
        <label key={field} class="field small" title={title}>
          <span>{label}</span>
          <input
            name={field}
            type="text"
            inputMode="numeric"
            placeholder="unlimited"
            value={value[field]}
            onInput={set(field)}
            disabled={disabled}
          />
        </label>
      ))}
      <label class="field" title="Comma-separated model ids (empty: all models)">
        <span>Models</span>
        <input
          name="models"
          type="text"
          placeholder="all models"
          value={value.models}
          onInput={set("models")}
          disabled={disabled}
        />
      </label>
      {withExpires && (
        <label class="field small" title='A duration such as "30d" or "12h" (empty: never)'>
          <span>Expires in</span>
          <input
            name="expires"
            type="text"
            placeholder="never"
            value={value.expires}
            onInput={set("expires")}
            disabled={disabled}
          />
        </label>
      )}
    </div>
  );
}
