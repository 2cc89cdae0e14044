// Checks each response the scenario receives against openapi/openapi.json at run time, as an
// openapi-fetch middleware. The generated types are only as true as the spec: a field the server
// sends as null where the spec says non-nullable, a property the spec does not list, an
// undocumented status or content type would type-check and then be wrong. This validates the
// subset of OpenAPI 3.0 schema keywords the spec uses ($ref, allOf, type, nullable, enum, format,
// properties, required, additionalProperties, items, minimum/maximum, min/maxLength, min/maxItems,
// pattern) and names each mismatch by operation, status, instance path and schema pointer.
import { readFileSync } from "node:fs";
import type { Middleware } from "openapi-fetch";

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  const s = JSON.stringify(v);
  return `${typeof v} ${s.length > 60 ? `${s.slice(0, 57)}...` : s}`;
}

/** RFC 3339 date-time (with a zone), as OpenAPI's `date-time` format means. */
const DATE_TIME = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

export class Conformance {
  /** Mismatches found so far, each one line. */
  readonly problems: string[] = [];
  /** How many responses were checked. */
  checked = 0;
  readonly middleware: Middleware;
  private readonly spec: Obj;

  constructor(readonly specPath: string) {
    const parsed: unknown = JSON.parse(readFileSync(specPath, "utf8"));
    if (!isObj(parsed) || !isObj(parsed["paths"])) throw new Error(`${specPath}: not an OpenAPI document`);
    this.spec = parsed;
    this.middleware = {
      onResponse: async ({ request, response, schemaPath }) => {
        await this.checkResponse(request.method.toLowerCase(), schemaPath, response);
        return undefined;
      },
    };
  }

  /** Resolves a local `$ref` ("#/components/schemas/X") to its target. */
  private resolve(ref: string): unknown {
    if (!ref.startsWith("#/")) return undefined;
    let node: unknown = this.spec;
    for (const raw of ref.slice(2).split("/")) {
      const key = raw.replaceAll("~1", "/").replaceAll("~0", "~");
      node = isObj(node) ? node[key] : undefined;
    }
    return node;
  }

  private deref(node: unknown, pointer: string): [unknown, string] {
    for (let i = 0; i < 20 && isObj(node) && typeof node["$ref"] === "string"; i++) {
      pointer = node["$ref"];
      node = this.resolve(node["$ref"]);
    }
    return [node, pointer];
  }

  private async checkResponse(method: string, schemaPath: string, response: Response): Promise<void> {
    this.checked++;
    const where = `${method.toUpperCase()} ${schemaPath} -> ${response.status}`;
    const paths = this.spec["paths"];
    const item = isObj(paths) ? paths[schemaPath] : undefined;
    const op = isObj(item) ? item[method] : undefined;
    const responses = isObj(op) ? op["responses"] : undefined;
    if (!isObj(responses)) {
      this.problems.push(`${where}: the spec has no operation ${method} ${schemaPath}`);
      return;
    }
    const key = String(response.status) in responses ? String(response.status) : "default";
    const opPointer = `#/paths/${schemaPath.replaceAll("~", "~0").replaceAll("/", "~1")}/${method}/responses/${key}`;
    const [spec, specPointer] = this.deref(responses[key], opPointer);
    if (!isObj(spec)) {
      this.problems.push(`${where}: status ${response.status} is not documented (${opPointer})`);
      return;
    }

    const headers = spec["headers"];
    if (isObj(headers)) {
      for (const [name, h] of Object.entries(headers)) {
        const [header] = this.deref(h, `${specPointer}/headers/${name}`);
        if (isObj(header) && header["required"] === true && !response.headers.has(name)) {
          this.problems.push(`${where}: required header ${name} is missing (${specPointer}/headers/${name})`);
        }
      }
    }

    const content = spec["content"];
    const text = await response.clone().text();
    if (!isObj(content) || Object.keys(content).length === 0) {
      if (text !== "") this.problems.push(`${where}: a body (${describe(text)}) where the spec documents none (${specPointer})`);
      return;
    }
    // A content key is a media type: `application/json` covers `application/json; charset=utf-8`
    // (OpenAPI 3.0 "Media Types"); a key with parameters must match them too.
    const normalize = (media: string): string => media.replaceAll(" ", "").toLowerCase();
    const contentType = normalize(response.headers.get("Content-Type") ?? "");
    const bareType = contentType.split(";")[0] ?? "";
    const mediaKey =
      Object.keys(content).find((k) => normalize(k) === contentType) ??
      Object.keys(content).find((k) => normalize(k) === bareType);
    if (mediaKey === undefined) {
      this.problems.push(
        `${where}: Content-Type ${JSON.stringify(contentType)} is not one the spec lists (${Object.keys(content).join(", ")}) at ${specPointer}/content`,
      );
      return;
    }
    const media = content[mediaKey];
    if (!isObj(media) || !("schema" in media)) return;
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      this.problems.push(`${where}: the body is not JSON: ${describe(text)}`);
      return;
    }
    const mediaPointer = `${specPointer}/content/${mediaKey.replaceAll("/", "~1")}/schema`;
    this.validate(media["schema"], body, "", mediaPointer, where);
  }

  private validate(schemaIn: unknown, value: unknown, at: string, pointerIn: string, where: string): void {
    const [schema, pointer] = this.deref(schemaIn, pointerIn);
    if (!isObj(schema)) return;
    const here = at === "" ? "(body)" : at;
    const bad = (what: string): void => {
      this.problems.push(`${where}: ${here} ${what} (schema ${pointer})`);
    };

    const allOf = schema["allOf"];
    if (Array.isArray(allOf)) {
      if (value === null && schema["nullable"] === true) return;
      allOf.forEach((s: unknown, i: number) => {
        this.validate(s, value, at, `${pointer}/allOf/${i}`, where);
      });
    }
    const type = schema["type"];
    if (value === null) {
      if (schema["nullable"] !== true && (typeof type === "string" || Array.isArray(schema["enum"]))) {
        bad(`is null, but the schema is not nullable`);
      }
      return;
    }

    const enumValues = schema["enum"];
    if (Array.isArray(enumValues) && !enumValues.includes(value)) bad(`is ${describe(value)}, not one of ${JSON.stringify(enumValues)}`);
    const format = schema["format"];
    const num = (k: string): number | undefined => {
      const v = schema[k];
      return typeof v === "number" ? v : undefined;
    };

    switch (type) {
      case "integer":
      case "number": {
        if (typeof value !== "number" || (type === "integer" && !Number.isInteger(value))) {
          bad(`is ${describe(value)}, expected ${type}`);
          return;
        }
        if (typeof format === "string" && format.startsWith("uint") && value < 0) bad(`is ${value}, negative for ${format}`);
        const min = num("minimum");
        const max = num("maximum");
        if (min !== undefined && value < min) bad(`is ${value}, below minimum ${min}`);
        if (max !== undefined && value > max) bad(`is ${value}, above maximum ${max}`);
        return;
      }
      case "string": {
        if (typeof value !== "string") {
          bad(`is ${describe(value)}, expected string`);
          return;
        }
        if (format === "date-time" && !DATE_TIME.test(value)) bad(`is ${JSON.stringify(value)}, not an RFC 3339 date-time`);
        const minLength = num("minLength");
        const maxLength = num("maxLength");
        const length = [...value].length;
        if (minLength !== undefined && length < minLength) bad(`has ${length} characters, below minLength ${minLength}`);
        if (maxLength !== undefined && length > maxLength) bad(`has ${length} characters, above maxLength ${maxLength}`);
        const pattern = schema["pattern"];
        if (typeof pattern === "string" && !new RegExp(pattern, "u").test(value)) bad(`${JSON.stringify(value)} does not match ${pattern}`);
        return;
      }
      case "boolean":
        if (typeof value !== "boolean") bad(`is ${describe(value)}, expected boolean`);
        return;
      case "array": {
        if (!Array.isArray(value)) {
          bad(`is ${describe(value)}, expected array`);
          return;
        }
        const minItems = num("minItems");
        const maxItems = num("maxItems");
        if (minItems !== undefined && value.length < minItems) bad(`has ${value.length} items, below minItems ${minItems}`);
        if (maxItems !== undefined && value.length > maxItems) bad(`has ${value.length} items, above maxItems ${maxItems}`);
        value.forEach((v: unknown, i: number) => {
          this.validate(schema["items"], v, `${at}[${i}]`, `${pointer}/items`, where);
        });
        return;
      }
      case "object":
      case undefined: {
        const properties = schema["properties"];
        if (type === undefined && !isObj(properties)) return; // free-form ({}), or allOf only
        if (!isObj(value)) {
          bad(`is ${describe(value)}, expected object`);
          return;
        }
        const required = schema["required"];
        if (Array.isArray(required)) {
          for (const name of required) {
            if (typeof name === "string" && !(name in value)) bad(`lacks required property ${name}`);
          }
        }
        const props = isObj(properties) ? properties : {};
        const additional = schema["additionalProperties"];
        for (const [name, v] of Object.entries(value)) {
          const path = at === "" ? name : `${at}.${name}`;
          if (name in props) {
            this.validate(props[name], v, path, `${pointer}/properties/${name}`, where);
          } else if (isObj(additional)) {
            this.validate(additional, v, path, `${pointer}/additionalProperties`, where);
          } else if (additional !== true && isObj(properties)) {
            // JSON Schema allows it, but a property the spec does not list is invisible to a
            // generated client: report it.
            this.problems.push(`${where}: ${path} is sent (${describe(v)}) but not in the schema (${pointer}/properties)`);
          }
        }
        return;
      }
      default:
        return;
    }
  }
}
